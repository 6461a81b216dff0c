"""repro.plots: the drawn lines carry the frame's numbers and read like the paper's figures (log
x axis ticked at the parameter counts, y inside [0, 100], titled legends, no series hidden,
spread shown or said absent, the paper's points only beside T5); PNG and PDF files are written."""

import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from repro.collect.frame import T5_PARAMS
from repro.plots.ablations import LEGEND_TITLES, axis_label, figure3, plot_grid, plot_panel
from repro.plots.cli import build_parser
from repro.plots.drawing import save_figure
from repro.plots.reference import ReferenceWarning, load_reference
from repro.plots.scale import figure1, plot_figure1

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "results" / "paper" / "reference.csv"
SMALL, BASE = 76961152, 247577856
TOY = {"toy_small": 23872, "toy_base": 75136, "toy_large": 260608, "toy_xl": 963328}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def panel_frame():
    """A superglue_frame-shaped frame: prompt lengths 1 and 100 at Small and Base."""
    return pd.DataFrame(
        {
            "size": ["small", "small", "base", "base"],
            "params": pd.array([SMALL, SMALL, BASE, BASE], dtype="Int64"),
            "prompt_len": pd.array([1, 100, 1, 100], dtype="Int64"),
            "mean": [50.0, 60.0, 55.0, 70.0],
            "std": [1.0, 2.0, float("nan"), 4.0],
            "n_seeds": [3, 3, 1, 3],
            "n_incomplete": [0, 0, 0, 0],
        }
    )


def errorbar_lines(ax):
    """{label: (sizes' params, y, half-length of each error bar, NaN: none)} from the errorbar
    containers; the drawn x of a line is its sizes' params times one dodge factor (`dodged`)."""
    out = {}
    for c in ax.containers:
        assert isinstance(c, ErrorbarContainer)
        data_line, _caps, (bars,) = c.lines
        halves = [
            abs(seg[1][1] - seg[0][1]) / 2 if len(seg) else float("nan")
            for seg in bars.get_segments()
        ]
        sizes = undodged(data_line.get_xdata())
        out[c.get_label()] = (sizes, list(data_line.get_ydata()), halves)
    return out


def undodged(xs):
    """The parameter counts behind a line's drawn x: one common factor, within 10% of 1."""
    known = [*T5_PARAMS.values(), *TOY.values()]
    sizes = [min(known, key=lambda p, x=x: abs(np.log(x / p))) for x in xs]
    factors = np.asarray(xs, dtype=float) / np.asarray(sizes, dtype=float)
    assert np.allclose(factors, factors[0]) and 0.9 < factors[0] < 1.1, (xs, sizes)
    return sizes


def test_backend_is_agg():
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_panel_lines_equal_the_frame(tmp_path):
    fig = plot_panel(panel_frame(), "prompt_len")
    ax = fig.axes[0]
    lines = errorbar_lines(ax)
    one = "1"  # where one seed leaves no spread is said under the axes, not in the legend
    assert list(lines) == [one, "100"]  # the paper's legend labels, in its order
    assert note_of(ax) == "mean ± std over 3 seeds; 1 seed, no spread: 1 at Base"
    assert lines[one][:2] == ([SMALL, BASE], [50.0, 55.0])
    assert lines[one][2] == pytest.approx([1.0, float("nan")], nan_ok=True)  # 1 seed: no bar
    assert lines["100"][:2] == ([SMALL, BASE], [60.0, 70.0])
    assert lines["100"][2] == pytest.approx([2.0, 4.0])
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["77M", "248M"]
    assert list(ax.get_xticks()) == [SMALL, BASE]
    (top,) = ax.child_axes  # the size names, at the same positions
    assert [t.get_text() for t in top.get_xticklabels()] == ["Small", "Base"]
    assert list(top.get_xticks()) == [SMALL, BASE]
    assert ax.get_title() == "(a) Prompt length"
    assert ax.get_ylabel() == "SuperGLUE Score"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [one, "100"]
    paths = save_figure(fig, tmp_path / "figs", "panel")
    assert [p.name for p in paths] == ["panel.png", "panel.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


def test_legend_labels_follow_the_paper():
    assert axis_label("init", "sampled_vocab") == "Sampled Vocab"
    assert axis_label("objective", "span_corruption_sentinel") == "Span Corruption + Sentinel"
    assert axis_label("objective", "lm_adapt") == "LM Adaptation (100K)"
    frame = panel_frame().rename(columns={"prompt_len": "objective"}).assign(std=1.0, n_seeds=3)
    frame["objective"] = ["lm_adapt", "span_corruption", "lm_adapt", "span_corruption"]
    labels = set(errorbar_lines(plot_panel(frame, "objective").axes[0]))
    assert labels == {"LM Adaptation (100K)", "Span Corruption"}
    frame["size"] = ["toy_small", "toy_small", "toy_base", "toy_base"]
    labels = set(errorbar_lines(plot_panel(frame, "objective").axes[0]))
    assert labels == {"LM Adaptation (500)", "Span Corruption"}  # the toy's own count
    assert axis_label("lm_adapt_steps", 50000.0) == "50K"  # CSV floats too
    assert axis_label("prompt_len", 150.0) == "150"
    frame = panel_frame().rename(columns={"prompt_len": "init"}).assign(std=1.0, n_seeds=3)
    frame["init"] = ["class_label", "random_uniform", "class_label", "random_uniform"]
    ax = plot_panel(frame, "init").axes[0]
    assert list(errorbar_lines(ax)) == ["Random Uniform", "Class Label"]


def test_points_without_a_complete_seed_are_not_drawn():
    frame = panel_frame()
    frame.loc[3, "mean"] = float("nan")
    lines = errorbar_lines(plot_panel(frame, "prompt_len").axes[0])
    assert lines["100"][:2] == ([SMALL], [60.0])


def test_plot_panel_bad_input():
    with pytest.raises(KeyError, match="superglue_frame"):
        plot_panel(panel_frame().drop(columns="std"), "prompt_len")
    frame = panel_frame()
    frame["params"] = pd.array([None] * 4, dtype="Int64")
    frame["size"] = "tiny"
    with pytest.raises(ValueError, match="tiny"):
        plot_panel(frame, "prompt_len")


def test_reference_table_holds_the_papers_numbers():
    ref = load_reference(REFERENCE_CSV)
    got = {(r.method, r.model): r.superglue for r in ref.itertuples()}
    assert got == {
        ("Prompt Design", "GPT-3 175B"): 71.8,
        ("Model Tuning", "T5-XXL"): 89.3,
        ("Prompt Tuning", "T5-XXL"): 90.5,
    }
    assert set(ref.loc[ref["model"] == "T5-XXL", "params"]) == {11135332352}


def test_plot_figure1_overlays_reference_points(tmp_path):
    ref = load_reference(REFERENCE_CSV)
    frame = pd.DataFrame(
        {
            "size": ["small", "base"],
            "params": [SMALL, BASE],
            "mean": [60.0, 70.0],
            "std": [2.0, 1.0],
            "n_seeds": [3, 3],
            "n_incomplete": [0, 0],
        }
    )
    with pytest.warns(ReferenceWarning) as caught:
        ax = plot_figure1(frame, ref).axes[0]
    lines = errorbar_lines(ax)
    assert lines["Prompt Tuning (ours)"][:2] == ([SMALL, BASE], [60.0, 70.0])
    points = {
        c.get_label(): tuple(c.get_offsets()[0]) for c in ax.collections if "paper" in c.get_label()
    }
    # each label names its split; the unverified 89.3 (model tuning) is not drawn, and said so
    assert points == {
        "Prompt Design (GPT-3 175B, paper, dev)": (175e9, 71.8),
        "Prompt Tuning (T5-XXL, paper, dev)": (11135332352, 90.5),
    }
    (warning,) = [str(w.message) for w in caught if w.category is ReferenceWarning]
    assert "Model Tuning (T5-XXL): split='unverified'" in warning
    assert "GPT-3 175B" in [t.get_text() for t in ax.child_axes[0].get_xticklabels()]
    assert "175B" in [t.get_text() for t in ax.get_xticklabels()]
    with pytest.raises(ValueError, match="one point per size"):
        plot_figure1(pd.concat([frame, frame]), ref)


def run_frame():
    """A run frame holding two sweeps (prompt length and init) on two toy tasks, 2 seeds."""
    rows = []
    settings = [(p, "class_label") for p in (1, 100)] + [(100, "random_uniform")]
    for size, params, base in (("small", SMALL, 50.0), ("base", BASE, 60.0)):
        for p, init in settings:
            for seed in (0, 1):
                for i, task in enumerate(("t1", "t2")):
                    score = base + (p == 100) * 10 + (init == "random_uniform") * -5 + seed + i
                    rows.append(
                        {
                            "size": size,
                            "params": params,
                            "objective": "lm_adapt",
                            "lm_adapt_steps": 100000,
                            "prompt_len": p,
                            "init": init,
                            "task": task,
                            "seed": seed,
                            "score": score,
                            "status": "finished",
                        }
                    )
    rows.append({**rows[0], "status": "failed", "score": 0.0, "prompt_len": 5})
    return pd.DataFrame(rows)


def test_figure3_draws_the_present_panels(tmp_path):
    written = figure3(run_frame(), tmp_path, tasks=["t1", "t2"])
    assert sorted(written) == ["figure3", "figure3a_prompt_len", "figure3b_init"]
    for paths in written.values():
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="no Figure 3 panel"):
        figure3(run_frame().query("prompt_len == 100 and init == 'class_label'"), tmp_path)


def test_figure1_from_runs_uses_the_default_setting(tmp_path):
    paths = figure1(run_frame(), tmp_path, load_reference(REFERENCE_CSV), tasks=["t1", "t2"])
    assert [p.name for p in paths] == ["figure1.png", "figure1.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_panel_from_runs_means_match_hand_numbers():
    """End to end on the hand-made runs: Small, prompt 100, class label → seeds 60.5, 61.5."""
    from repro.collect.superglue import panel_runs, superglue_frame

    frame = superglue_frame(panel_runs(run_frame(), "prompt_len"), "prompt_len", tasks=["t1", "t2"])
    lines = errorbar_lines(plot_panel(frame, "prompt_len").axes[0])
    assert lines["100"][1] == pytest.approx([61.0, 71.0])
    assert lines["100"][2] == pytest.approx([np.std([60.5, 61.5], ddof=1)] * 2)
    assert list(lines) == ["1", "100"]  # the failed prompt-length-5 run draws no line


def test_cli_figure1_alone_from_a_size_only_sweep(tmp_path, capsys):
    """A frame that varies only model size has no Figure 3 panel; --figure1 still draws."""
    from repro.plots.cli import main

    frame = run_frame().query("prompt_len == 100 and init == 'class_label'")
    frame.to_csv(tmp_path / "runs.csv", index=False)
    args = [str(tmp_path / "runs.csv"), "-o", str(tmp_path / "fig"), "--tasks", "t1", "t2"]
    assert main([*args, "--figure1", "--reference", str(REFERENCE_CSV)]) == 0
    assert (tmp_path / "fig/figure1.png").exists()
    assert not (tmp_path / "fig/figure3.png").exists()
    assert main(args) == 2  # without --figure1 there is nothing to draw: one error line
    assert "no Figure 3 panel" in capsys.readouterr().err


def test_unknown_numeric_axis_values_sort_as_numbers():
    """Toy LM-adaptation steps (numpy ints from a frame) order 0, 50, 250, 500, not as text."""
    from repro.plots.ablations import _axis_order

    values = list(np.array([500, 250, 0, 50], dtype=np.int64))
    assert [int(v) for v in _axis_order("lm_adapt_steps", values)] == [0, 50, 250, 500]
    assert _axis_order("prompt_len", [150.0, 3, 1]) == [1, 150.0, 3]  # paper's values first


def test_lm_adapt_steps_panel_shows_the_recipe_of_each_point():
    """Figure 3(d) mixes Google's released 100K checkpoints with the suite's own 10K/50K: each
    line says its recipe in the legend and in its style; released and own 100K stay apart."""
    frame = pd.DataFrame(
        {
            "size": ["small", "base"] * 4,
            "params": pd.array([SMALL, BASE] * 4, dtype="Int64"),
            "lm_adapt_steps": pd.array([100000, 100000, 0, 0, 10000, 10000, 100000, 100000]),
            "lm_adapt_source": ["own"] * 2 + ["none"] * 2 + ["own"] * 2 + ["released"] * 2,
            "mean": [70.0, 75.0, 50.0, 55.0, 60.0, 65.0, 80.0, 85.0],
            "std": [1.0] * 8,
        }
    )
    ax = plot_panel(frame, "lm_adapt_steps").axes[0]
    lines = errorbar_lines(ax)
    assert list(lines) == ["0K (none: T5.1.1)", "10K (own)", "100K (released)", "100K (own)"]
    assert lines["100K (released)"][:2] == ([SMALL, BASE], [80.0, 85.0])
    assert lines["100K (own)"][:2] == ([SMALL, BASE], [70.0, 75.0])
    style = {c.get_label(): c.lines[0] for c in ax.containers}
    assert style["100K (released)"].get_linestyle() == "-"
    assert style["100K (own)"].get_linestyle() == "--"
    assert style["0K (none: T5.1.1)"].get_linestyle() == ":"
    # one colour per step count, the recipe in the style
    assert style["100K (released)"].get_color() == style["100K (own)"].get_color()
    assert style["10K (own)"].get_color() != style["100K (own)"].get_color()
    # a frame without the column (an older CSV) draws one plain line per step count
    plain = plot_panel(frame.drop(columns="lm_adapt_source").iloc[2:6], "lm_adapt_steps")
    assert list(errorbar_lines(plain.axes[0])) == ["0K", "10K"]


def test_reference_rows_without_a_stated_source_are_not_drawn():
    ref = pd.DataFrame(
        {
            "method": ["A", "B", "C", "D"],
            "model": ["T5-XXL", "T5-XXL", "GPT-3 175B", "T5-XL"],
            "params": [11135332352, 11135332352, 175e9, 2849757184],
            "superglue": [90.0, 89.0, 70.0, 80.0],
            "split": ["dev", "unverified", "test", ""],
            "source": ["Table 3", "issue 5", "  ", "Figure 1"],
        }
    )
    with pytest.warns(ReferenceWarning) as caught:
        ax = plot_panel(panel_frame(), "prompt_len", reference=ref).axes[0]
    labels = [c.get_label() for c in ax.collections if not c.get_label().startswith("_")]
    assert labels == ["A (T5-XXL, paper, dev)"]
    (warning,) = [str(w.message) for w in caught if w.category is ReferenceWarning]
    for skipped in ("B (T5-XXL): split='unverified'", "C (GPT-3 175B)", "D (T5-XL): split=''"):
        assert skipped in warning
    assert "A (T5-XXL)" not in warning
    with pytest.raises(KeyError, match=r"lacks columns \['source'\]"):
        plot_panel(panel_frame(), "prompt_len", reference=ref.drop(columns="source"))


# --- CLI refusals: one `error:` line, exit 2, no figure written ---------------------------------


def never_complete():
    """t1 ran only at Small, t2 only at Base: no point has both tasks."""
    runs = run_frame()
    t1_small = runs["task"].eq("t1") & runs["size"].eq("small")
    t2_base = runs["task"].eq("t2") & runs["size"].eq("base")
    return runs[t1_small | t2_base]


NOTHING_TO_PLOT = [
    # (case, frame, extra args, fragments of the one error line)
    (
        "task not in the frame",
        run_frame,
        ["--tasks", "t9"],
        [
            "nothing to plot: the frame has no run of task(s) ['t9'] (asked for ['t9'])",
            "it holds runs of ['t1', 't2']: choose among them with --tasks",
        ],
    ),
    (
        "SuperGLUE's tasks by default",
        run_frame,
        [],
        ["no run of task(s) ['boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic', 'wsc']"],
    ),
    (
        "a toy frame without --tasks",
        lambda: run_frame().assign(
            task=lambda f: f["task"].map({"t1": "toy_review", "t2": "toy_fact"})
        ),
        [],
        [
            "no run of task(s) ['boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic', 'wsc']",
            "it holds runs of ['toy_fact', 'toy_review']: choose among them with --tasks",
        ],
    ),
    (
        "one of two tasks not in the frame",
        run_frame,
        ["--tasks", "t1", "t9"],
        ["no run of task(s) ['t9'] (asked for ['t1', 't9']); it holds runs of ['t1', 't2']"],
    ),
    (
        "only NaN scores",
        lambda: run_frame().assign(score=float("nan")),
        ["--tasks", "t1", "t2"],
        [
            "no run of task(s) ['t1', 't2'] is finished with a score",
            "the frame holds 24 finished, 1 failed run(s) of them (24 finished with score NaN)",
        ],
    ),
    (
        "only failed runs of a task",
        lambda: run_frame().assign(
            status=lambda f: f["status"].where(f["task"].eq("t1"), "failed")
        ),
        ["--tasks", "t1", "t2"],
        ["no run of task(s) ['t2'] is finished with a score; the frame holds 12 failed run(s)"],
    ),
    (
        "tasks never together at one point",
        never_complete,
        ["--tasks", "t1", "t2"],
        ["no figure point (size, axis value, seed) has a finished, scored run of every task"],
    ),
    (
        "Figure 1 alone, only NaN scores",
        lambda: (
            run_frame()
            .query("prompt_len == 100 and init == 'class_label'")
            .assign(score=float("nan"))
        ),
        ["--tasks", "t1", "t2", "--figure1", "--reference", str(REFERENCE_CSV)],
        ["no run of task(s) ['t1', 't2'] is finished with a score"],
    ),
]


@pytest.mark.parametrize(
    ("frame", "extra", "fragments"),
    [c[1:] for c in NOTHING_TO_PLOT],
    ids=[c[0] for c in NOTHING_TO_PLOT],
)
def test_cli_refuses_a_frame_with_nothing_to_plot(tmp_path, capsys, frame, extra, fragments):
    from repro.plots.cli import main
    from tests.test_bad_input import assert_one_error

    frame().to_csv(tmp_path / "runs.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CollectWarning: the points that lack a task
        code = main([str(tmp_path / "runs.csv"), "-o", str(tmp_path / "fig"), *extra])
    assert_one_error(code, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "fig").exists()  # no empty figure


def test_cli_names_the_missing_columns_and_the_file(tmp_path, capsys):
    from repro.plots.cli import main
    from tests.test_bad_input import assert_one_error

    path = tmp_path / "runs.csv"
    run_frame().drop(columns=["status", "seed"]).to_csv(path, index=False)
    code = main([str(path), "-o", str(tmp_path / "fig"), "--tasks", "t1", "t2"])
    assert_one_error(
        code,
        capsys.readouterr().err,
        f"{path} lacks column(s) ['seed', 'status']",
        "write the frame with python -m repro.collect",
    )
    path.write_text("")  # an empty file: no columns at all
    code = main([str(path), "-o", str(tmp_path / "fig")])
    assert_one_error(
        code,
        capsys.readouterr().err,
        f"cannot read the run frame {path}: No columns to parse from file",
    )
    assert not (tmp_path / "fig").exists()


# --- Figures that read like the paper's (issue 15) ---------------------------------------------

PANEL_VALUES = {
    "prompt_len": [1, 20, 100],
    "init": ["random_uniform", "sampled_vocab", "class_label"],
    "objective": ["span_corruption", "span_corruption_sentinel", "lm_adapt"],
    "lm_adapt_steps": [0, 10_000, 100_000],
}


def axis_frame(axis, sizes=("small", "base", "large"), seeds=3, mean=None):
    """A superglue_frame-shaped frame over `sizes`: at the first size every value scores the
    same (identical dots), elsewhere they differ; std 1.5 (NaN with one seed)."""
    rows = []
    for j, size in enumerate(sizes):
        for i, value in enumerate(PANEL_VALUES[axis]):
            rows.append(
                {
                    "size": size,
                    "params": T5_PARAMS.get(size) or TOY[size],
                    axis: value,
                    "mean": mean if mean is not None else 60.0 if j == 0 else 50 + 10 * j + 3 * i,
                    "std": 1.5 if seeds > 1 else float("nan"),
                    "n_seeds": seeds,
                    "n_incomplete": 0,
                }
            )
    return pd.DataFrame(rows)


def note_of(ax):
    """The note under an axes (its one annotation), unwrapped."""
    (note,) = [t for t in ax.texts if t.get_text()]
    return note.get_text().replace("\n", " ")


def assert_markers_inside(ax):
    """Every drawn marker lies whole inside the axes' frame (in pixels: centre ± radius)."""
    ax.figure.canvas.draw()
    frame = ax.get_window_extent()
    for c in ax.containers:
        line = c.lines[0]
        radius = line.get_markersize() / 2 * ax.figure.dpi / 72
        xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
        for px, py in ax.transData.transform(xy[np.isfinite(xy).all(axis=1)]):
            assert frame.x0 <= px - radius and px + radius <= frame.x1, (c.get_label(), px)
            assert frame.y0 <= py - radius and py + radius <= frame.y1, (c.get_label(), py)


def drawn_points(ax):
    """{label: [(x, y), ...]} as drawn (dodged x)."""
    return {
        c.get_label(): list(zip(c.lines[0].get_xdata(), c.lines[0].get_ydata(), strict=True))
        for c in ax.containers
    }


@pytest.mark.parametrize("axis", list(PANEL_VALUES))
def test_each_panel_reads_like_the_papers(axis):
    """Log x ticked at the parameter counts (size names on top), y inside [0, 100], a legend
    titled with the axis, one visible legend entry per line, no line hidden by another."""
    fig = plot_panel(axis_frame(axis), axis)
    ax = fig.axes[0]
    params = [T5_PARAMS["small"], T5_PARAMS["base"], T5_PARAMS["large"]]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == params
    assert [t.get_text() for t in ax.get_xticklabels()] == ["77M", "248M", "783M"]
    assert ax.get_xlabel() == "Model Parameters"
    (top,) = ax.child_axes
    assert list(top.get_xticks()) == params
    assert [t.get_text() for t in top.get_xticklabels()] == ["Small", "Base", "Large"]
    low, high = ax.get_ylim()
    assert min(ax.get_yticks()) >= 0 and max(ax.get_yticks()) <= 100  # scores' ticks only
    legend = ax.get_legend()
    assert legend.get_title().get_text() == LEGEND_TITLES[axis]
    assert min(t.get_fontsize() for t in [legend.get_title(), *legend.get_texts()]) >= 8
    # every line has its own visible legend entry
    labels = [axis_label(axis, v) for v in PANEL_VALUES[axis]]
    assert [t.get_text() for t in legend.get_texts()] == labels
    assert [c.get_label() for c in ax.containers] == labels
    assert all(h.get_visible() for h in legend.legend_handles)
    # no line hides another: where scores coincide (every value at Small), the x positions differ
    points = drawn_points(ax)
    at_small = [pts[0] for pts in points.values()]
    assert len({y for _, y in at_small}) == 1 and len({x for x, _ in at_small}) == len(labels)
    for a, b in ((a, b) for a in points for b in points if a < b):
        for (xa, ya), (xb, yb) in zip(points[a], points[b], strict=True):
            assert xa != xb or ya != yb, (a, b)
    # ... every point on the axes, and the legend beside them, covering none
    xlow, xhigh = ax.get_xlim()
    assert all(xlow < x < xhigh and low <= y <= high for pts in points.values() for x, y in pts)
    assert_markers_inside(ax)
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_dodge_is_one_factor_per_line_and_small():
    """Each line keeps one x factor at every size (`undodged` checks it), centred on the tick."""
    ax = plot_panel(axis_frame("prompt_len"), "prompt_len").axes[0]
    factors = []
    for x, _ in (pts[1] for pts in drawn_points(ax).values()):
        factors.append(x / T5_PARAMS["base"])
    assert factors == sorted(factors) and factors[0] < 1 < factors[-1]
    assert factors[0] * factors[-1] == pytest.approx(1.0)  # symmetric around the true count
    errorbar_lines(ax)  # raises unless each line has a single factor within 10%


def test_saturated_and_zero_panels_stay_inside_0_100():
    """A panel at 100 is ticked 90-100 (was 95-105), one at 0 from 0; the frame sits a margin
    beyond the ticks, so a dot at 100 or 0 shows whole inside it (issue 30: it was cut)."""
    ax = plot_panel(axis_frame("init", mean=100.0).assign(std=3.0), "init").axes[0]
    assert (min(ax.get_yticks()), max(ax.get_yticks())) == (90.0, 100.0)
    assert ax.get_ylim() == pytest.approx((89.5, 100.5))
    assert_markers_inside(ax)
    ax = plot_panel(axis_frame("init", mean=0.0), "init").axes[0]
    assert (min(ax.get_yticks()), max(ax.get_yticks())) == (0.0, 10.0)
    assert_markers_inside(ax)
    flat = plot_panel(axis_frame("init", mean=52.0).assign(std=0.0), "init").axes[0]
    low, high = flat.get_ylim()
    assert high - low >= 10 and low < 52 < high  # not 51.9-52.1


def test_figure1_of_a_single_size_gives_one_tick_and_room_around_it():
    frame = axis_frame("prompt_len", sizes=("base",)).rename(columns={"prompt_len": "method"})
    frame["method"] = ["prompt", "model", "model_multitask"]
    ax = plot_figure1(frame, load_reference(REFERENCE_CSV).iloc[:0]).axes[0]
    assert list(ax.get_xticks()) == [BASE]
    assert [t.get_text() for t in ax.child_axes[0].get_xticklabels()] == ["Base"]
    low, high = ax.get_xlim()
    assert low <= BASE / 2 and high >= BASE * 2
    xs = [x for pts in drawn_points(ax).values() for x, _ in pts]
    assert len(set(xs)) == 3 and all(low < x < high for x in xs)


def test_spread_is_drawn_with_two_seeds_and_said_absent_with_one():
    ax = plot_panel(axis_frame("prompt_len", seeds=2), "prompt_len").axes[0]
    for _sizes, _y, halves in errorbar_lines(ax).values():
        assert halves == pytest.approx([1.5] * 3)  # error bars: ± std
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # a light band per line
    for band, (_label, pts) in zip(bands, drawn_points(ax).items(), strict=True):
        ys = band.get_paths()[0].vertices[:, 1]
        assert min(ys) == pytest.approx(min(y for _, y in pts) - 1.5)
    assert "seed" not in ax.get_legend().get_title().get_text()
    assert note_of(ax) == "mean ± std over 2 seeds"

    one = plot_panel(axis_frame("prompt_len", seeds=1), "prompt_len").axes[0]
    assert one.get_legend().get_title().get_text() == "Prompt length"
    assert note_of(one) == "1 seed: no spread"  # said under the axes, not in the legend
    assert not [c for c in one.collections if isinstance(c, PolyCollection)]  # no band
    assert all(np.isnan(errorbar_lines(one)[k][2]).all() for k in ("1", "20", "100"))  # no bar


def axes_per_saved_figure(monkeypatch) -> dict[str, int]:
    """Spy on save_figure: figure name → its number of axes, filled as they save. Patched where
    it is looked up: the figure rooms and the toy world's report (each imports it)."""
    import repro.plots.drawing as drawing

    axes_in = {}
    real_save = drawing.save_figure

    def save(fig, out_dir, name):
        axes_in[name] = len(fig.axes)
        return real_save(fig, out_dir, name)

    monkeypatch.setattr("repro.plots.scale.save_figure", save)
    monkeypatch.setattr("repro.plots.ablations.save_figure", save)
    monkeypatch.setattr("repro.toyworld.report.save_figure", save)
    return axes_in


def test_figure3_composite_has_one_axes_per_panel(tmp_path, monkeypatch):

    axes_in = axes_per_saved_figure(monkeypatch)
    figure3(run_frame(), tmp_path, tasks=["t1", "t2"])  # prompt length and init: 2 panels
    assert axes_in == {"figure3a_prompt_len": 1, "figure3b_init": 1, "figure3": 2}
    for n in (1, 2, 3, 4):
        frames = {a: axis_frame(a) for a in list(PANEL_VALUES)[:n]}
        fig = plot_grid(frames)
        assert len(fig.axes) == n and all(ax.get_visible() for ax in fig.axes)
        rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
        assert (rows, cols) == ((1, n) if n < 4 else (2, 2))


def toy_points():
    return pd.DataFrame(
        {
            "size": ["toy_small", "toy_base"],
            "params": [TOY["toy_small"], TOY["toy_base"]],
            "mean": [52.0, 77.0],
            "std": [0.5, 1.0],
            "n_seeds": [3, 3],
            "n_incomplete": [0, 0],
        }
    )


def test_figure1_on_a_toy_frame_has_no_reference_markers_and_warns(tmp_path):
    ref = load_reference(REFERENCE_CSV)
    with pytest.warns(ReferenceWarning, match=r"left out: size\(s\) \['toy_base', 'toy_small'\]"):
        ax = plot_figure1(toy_points(), ref).axes[0]
    assert not ax.collections or all("paper" not in c.get_label() for c in ax.collections)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Prompt Tuning"]
    assert ax.get_title().count("toy model, not T5") == 1  # once, in the title
    assert "GPT-3 175B" not in [t.get_text() for t in ax.child_axes[0].get_xticklabels()]
    # a size named like T5 but with a toy's parameter count is no T5 either
    fake = toy_points().assign(size=["small", "base"])
    with pytest.warns(ReferenceWarning, match="no T5.1.1 size"):
        ax = plot_figure1(fake, ref).axes[0]
    assert all("paper" not in c.get_label() for c in ax.collections)
    # the same rule on a Figure 3 panel, and end to end from a toy run frame
    with pytest.warns(ReferenceWarning, match="toy_small"):
        ax = plot_panel(axis_frame("init", sizes=("toy_small",)), "init", reference=ref).axes[0]
    assert all("paper" not in c.get_label() for c in ax.collections)
    assert "toy model, not T5" in ax.get_title()
    runs = run_frame().assign(
        size=lambda f: f["size"].map({"small": "toy_small", "base": "toy_base"}),
        params=lambda f: f["size"].map(TOY),
    )
    with pytest.warns(ReferenceWarning, match="toy"):
        paths = figure1(runs, tmp_path, ref, tasks=["t1", "t2"])
    assert [p.suffix for p in paths] == [".png", ".pdf"]


def test_every_cli_option_has_help():
    parser = build_parser()
    undocumented = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert undocumented == []
    assert "reference" in parser.format_help()


def test_toy_report_figures_are_png_and_pdf_with_only_the_present_panels(tmp_path, monkeypatch):
    from repro.toyworld.report import figures

    axes_in = axes_per_saved_figure(monkeypatch)
    points = {
        "fig3a_prompt_len": axis_frame("prompt_len", sizes=tuple(TOY)),
        "fig3c_objective": axis_frame("objective", sizes=tuple(TOY)),
    }
    written = figures(points, tmp_path)
    assert sorted(written) == ["figure3", "figure3a_prompt_len", "figure3c_objective"]
    for paths in written.values():
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.stat().st_size > 1000 for p in paths)
    assert axes_in["figure3"] == 2  # no empty slot for panels (b) and (d)


# --- Figures of issue 30, item 7 -----------------------------------------------------------------

MAIN_JOB_SCORES = [58.0, 100.0, 100.0, 100.0, 100.0]  # the README's main job: toy_xl, 1 seed


def one_size_frame(seeds=1, axis="prompt_len", values=(1, 5, 20, 100, 150), means=None):
    """A superglue_frame of one toy size (as the README's main job writes): a point per value."""
    means = means or MAIN_JOB_SCORES[: len(values)]
    return pd.DataFrame(
        {
            "size": "toy_xl",
            "params": TOY["toy_xl"],
            axis: list(values),
            "mean": means,
            "std": [1.5 if seeds > 1 else float("nan")] * len(values),
            "n_seeds": seeds,
            "n_incomplete": 0,
        }
    )


def test_one_size_panel_is_drawn_against_prompt_length():
    """One size: x = prompt length (ticked 1 … 150, evenly spaced), one line joining the means,
    the size named in the x label; nothing dodged around a lone size tick, no marker cut."""
    ax = plot_panel(one_size_frame(), "prompt_len").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "20", "100", "150"]
    assert list(ax.get_xticks()) == [0, 1, 2, 3, 4]
    assert not ax.child_axes  # no size axis on top
    (container,) = ax.containers
    line = container.lines[0]
    assert line.get_linestyle() == "-"  # a Line2D joins the points
    assert list(line.get_xdata()) == [0, 1, 2, 3, 4]
    assert list(line.get_ydata()) == MAIN_JOB_SCORES
    assert ax.get_xlabel() == "Prompt length, at toy_xl (963K parameters)"
    assert ax.get_legend() is None  # one line: its ticks say what its points are
    assert note_of(ax) == "1 seed: no spread"
    assert max(ax.get_yticks()) == 100 and ax.get_ylim()[1] > 100
    assert_markers_inside(ax)
    # with seeds: error bars of ± std and a band along the line
    ax = plot_panel(one_size_frame(seeds=3), "prompt_len").axes[0]
    (container,) = ax.containers
    (bars,) = container.lines[2]
    assert [abs(a[1] - b[1]) / 2 for a, b in bars.get_segments()] == pytest.approx([1.5] * 5)
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    assert note_of(ax) == "mean ± std over 3 seeds"
    assert_markers_inside(ax)


def test_one_size_panel_of_an_unordered_axis_is_not_joined():
    """Initialisations have no order: at one size they are separate markers (no line, no band)
    at their paper labels."""
    values = ["class_label", "random_uniform", "sampled_vocab"]
    ax = plot_panel(one_size_frame(3, "init", values, [70.0, 60.0, 65.0]), "init").axes[0]
    ticks = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert ticks == ["Random Uniform", "Sampled Vocab", "Class Label"]
    (container,) = ax.containers
    assert container.lines[0].get_linestyle() == "None"
    assert list(container.lines[0].get_ydata()) == [60.0, 65.0, 70.0]  # the paper's order
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_main_job_figure_from_the_cli(tmp_path, capsys):
    """The README's main job, from its run frame: panel (a) against prompt length."""
    from repro.plots.cli import main

    rows = [
        {"size": "toy_xl", "params": TOY["toy_xl"], "prompt_len": p, "init": "class_label",
         "task": "toy_review", "seed": 0, "status": "finished", "score": score}
        for p, score in zip((1, 5, 20, 100, 150), MAIN_JOB_SCORES, strict=True)
    ]  # fmt: skip
    path = tmp_path / "toy_prompt_len.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    figures = {}
    real = plt.close
    with pytest.MonkeyPatch.context() as mp:  # keep each figure to look at it
        mp.setattr(plt, "close", lambda fig=None: figures.setdefault(len(figures), fig))
        assert main([str(path), "--tasks", "toy_review", "-o", str(tmp_path / "f")]) == 0
    panel = figures[0].axes[0]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["1", "5", "20", "100", "150"]
    assert panel.get_ylabel() == "Score (toy_review)"
    assert_markers_inside(panel)
    for fig in figures.values():
        real(fig)


def test_composite_panels_share_one_score_range():
    """Four panels of different ranges (0-80 vs 45-75 in the toy Figure 3) share one, so the
    same score sits at the same height in each; the toy note is said once, in the title."""
    frames = {a: axis_frame(a, sizes=tuple(TOY)) for a in PANEL_VALUES}
    frames["prompt_len"].loc[0, "mean"] = 2.0
    frames["init"]["mean"] = frames["init"]["mean"].clip(upper=75)
    fig = plot_grid(frames)
    limits = {ax.get_ylim() for ax in fig.axes}
    assert len(limits) == 1, limits
    assert len({tuple(ax.get_yticks()) for ax in fig.axes}) == 1
    assert min(fig.axes[0].get_yticks()) == 0.0
    for ax in fig.axes:
        assert_markers_inside(ax)
        assert "toy" not in ax.get_title()
    assert fig.get_suptitle().count("toy model, not T5") == 1


def test_toy_frames_get_no_t5_words():
    """Panel (d)'s 0-step recipe on a toy frame is its span-corruption checkpoint, not T5.1.1;
    a toy frame's y label is no SuperGLUE score (compare_wandb draws with the default)."""
    frame = axis_frame("lm_adapt_steps", sizes=tuple(TOY))
    frame["lm_adapt_source"] = frame["lm_adapt_steps"].map({0: "none", 10_000: "own"})
    frame = frame[frame["lm_adapt_source"].notna()]
    ax = plot_panel(frame, "lm_adapt_steps").axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["0K (none: span corruption)", "10K (own)"]
    assert not [t for t in texts if "T5" in t]
    assert ax.get_ylabel() == "Score"
    t5 = plot_panel(axis_frame("prompt_len"), "prompt_len").axes[0]
    assert t5.get_ylabel() == "SuperGLUE Score"  # only for T5.1.1 sizes
    one_task = axis_frame("init", sizes=tuple(TOY))
    one_task.attrs["tasks"] = ["toy_review"]
    assert plot_panel(one_task, "init").axes[0].get_ylabel() == "Score (toy_review)"
    # at one size: the recipes are the lines, steps the x axis
    ax = plot_panel(frame[frame["size"] == "toy_xl"], "lm_adapt_steps").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["own", "none: span corruption"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0K", "10K"]


def test_mixed_seed_counts_are_noted_under_the_axes_not_in_the_legend():
    """A point with one seed beside 3-seed points: the legend keeps the paper's labels (so it
    no longer squeezes the panel), the note under the axes says where the spread is missing."""
    frame = axis_frame("prompt_len", sizes=tuple(TOY))
    single = frame["prompt_len"].eq(1) & frame["size"].ne("toy_small")
    frame.loc[single, ["std", "n_seeds"]] = [float("nan"), 1]
    fig = plot_panel(frame, "prompt_len")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["1", "20", "100"]
    assert not [t for t in [*texts, ax.get_legend().get_title().get_text()] if "seed" in t]
    assert note_of(ax) == (
        "mean ± std over 3 seeds; 1 seed, no spread: 1 at toy_base, toy_large, toy_xl"
    )
    fig.canvas.draw()
    legend, frame_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.width < 0.25 * frame_box.width  # the legend leaves the panel its width
    note = ax.texts[0].get_window_extent()
    assert note.y1 <= ax.xaxis.label.get_window_extent().y0  # under the x label
