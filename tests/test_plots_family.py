"""The backbone family in the figures (issue 29): two families' scores are never averaged nor
joined by a line, a frame of several families is drawn once per family (`<name>_<family>`
files), a causal figure says so in its title and counts pre-training steps, and a T5-only frame
keeps today's file names and titles."""

import contextlib
import io
import itertools
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from repro.collect.frame import to_frame
from repro.collect.superglue import family_groups, panel_runs, superglue_frame
from repro.plots.ablations import figure3, figure3_names, plot_panel
from repro.plots.cli import main
from repro.plots.reference import load_reference
from repro.plots.scale import figure1_names, plot_figure1

T5_SIZES = {"small": 76_961_152, "base": 247_577_856, "large": 783_150_080}
# Causal sizes without a conf/model file: each holds its default setting at 100K steps
# (`repro.checkpoints.model_lm_adapt_steps`), as a Qwen2.5 size does.
CAUSAL_SIZES = {"lm_160m": 162_322_944, "lm_410m": 405_334_016}
CAUSAL_STEPS = (1_000, 50_000)  # Pythia-like step<N> checkpoints beside the default 100K
TASKS = ["t1", "t2"]
REFERENCE_CSV = str(Path(__file__).resolve().parents[1] / "results" / "paper" / "reference.csv")
PANELS = ["figure3a_prompt_len", "figure3b_init", "figure3c_objective", "figure3d_lm_adapt_steps"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def family_rows(family, sizes=None, offset=0.0):
    """Result rows of every Figure 3 sweep of one family (2 seeds × 2 tasks): T5 rows record no
    family (a result.json from before the column, read as t5); the default setting scores
    `offset + 50 + 10·size index + seed + task index`, every other setting less."""
    causal = family == "causal"
    sizes = sizes or (CAUSAL_SIZES if causal else T5_SIZES)
    stepped, other = ("next_token", "instruct") if causal else ("lm_adapt", "span_corruption")
    steps = CAUSAL_STEPS if causal else (10_000,)
    rows = []
    for (i, (size, params)), seed, (j, task) in itertools.product(
        enumerate(sizes.items()), (0, 1), enumerate(TASKS)
    ):
        base = offset + 50.0 + 10 * i + seed + j
        row = {
            "size": size,
            "params": params,
            "objective": stepped,
            "lm_adapt_steps": 100_000,
            "lm_adapt_source": "none" if causal else "released",
            "prompt_len": 100,
            "init": "class_label",
            "task": task,
            "seed": seed,
            "status": "finished",
            **({"family": "causal"} if causal else {}),
        }
        # the instruction-tuned checkpoint (causal); span corruption, no LM adaptation (T5)
        other_axes = {"objective": other}
        if not causal:
            other_axes |= {"lm_adapt_steps": None, "lm_adapt_source": "none"}
        source = {} if causal else {"lm_adapt_source": "own"}
        settings = [
            (base, {}),
            (base - 20, {"prompt_len": 1}),
            (base - 5, {"init": "random_uniform"}),
            (base - 15, other_axes),
            *((base - 8 - n / 10_000, {"lm_adapt_steps": n, **source}) for n in steps),
        ]
        rows += [{**row, **axes, "score": score} for score, axes in settings]
    return rows


def two_families():
    """T5 at 50-ish, causal 30 points lower: a mean over both would show."""
    return to_frame([*family_rows("t5"), *family_rows("causal", offset=-30.0)])


def t5_only():
    return to_frame(family_rows("t5"))


def write_csv(frame, path):
    frame.to_csv(path, index=False)
    return str(path)


def saved_figures(monkeypatch) -> dict:
    """Spy on save_figure in the figure rooms: name → the figure saved under it."""
    import repro.plots.drawing as drawing

    saved = {}
    real_save = drawing.save_figure

    def save(fig, out_dir, name):
        saved[name] = fig
        return real_save(fig, out_dir, name)

    monkeypatch.setattr("repro.plots.ablations.save_figure", save)
    monkeypatch.setattr("repro.plots.scale.save_figure", save)
    return saved


def drawn_lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    """{legend label: (drawn x, y)} of each errorbar line of an axes."""
    out = {}
    for c in ax.containers:
        assert isinstance(c, ErrorbarContainer)
        data_line = c.lines[0]
        out[c.get_label()] = (list(data_line.get_xdata()), list(data_line.get_ydata()))
    return out


def sizes_of(xs, families=("t5", "causal")) -> set[str]:
    """The families whose parameter counts a line's (dodged) x values sit at."""
    counts = {
        **{p: "t5" for p in T5_SIZES.values()},
        **{p: "causal" for p in CAUSAL_SIZES.values()},
    }
    near = [min(counts, key=lambda p, x=x: abs(np.log(x / p))) for x in xs]
    assert all(abs(np.log(x / p)) < 0.2 for x, p in zip(xs, near, strict=True))
    return {counts[p] for p in near}


def all_text(fig) -> str:
    """Every title, label, tick and legend text of a figure, in one string."""
    texts = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            texts += [legend.get_title().get_text(), *(t.get_text() for t in legend.get_texts())]
    return "\n".join(texts)


# ---------------------------------------------------------------------------- the points


def test_superglue_points_of_two_families_are_never_averaged():
    """Even at one size name and parameter count, a causal and a T5 point stay two points;
    each family is held at its own default objective (T5: lm_adapt, causal: next_token)."""
    same = {"shared": 200_000_000}
    runs = to_frame([*family_rows("t5", same), *family_rows("causal", same, offset=-30.0)])
    assert list(family_groups(runs)) == ["t5", "causal"]
    sel = panel_runs(runs, "prompt_len")
    assert set(zip(sel["family"], sel["objective"], strict=True)) == {
        ("t5", "lm_adapt"),
        ("causal", "next_token"),
    }
    points = superglue_frame(sel, "prompt_len", tasks=TASKS)
    assert list(points.columns[:4]) == ["family", "size", "params", "prompt_len"]
    means = {(f, p): m for f, p, m in points[["family", "prompt_len", "mean"]].values}
    # default setting: seeds 0/1 over tasks t1/t2 → 50.5, 51.5 → 51; causal 30 lower
    assert means == pytest.approx(
        {("t5", 1): 31.0, ("t5", 100): 51.0, ("causal", 1): 1.0, ("causal", 100): 21.0}
    )
    # the objective panel: each family's two checkpoints, the stepped one at its default steps
    objective = superglue_frame(panel_runs(runs, "objective"), "objective", tasks=TASKS)
    assert sorted(zip(objective["family"], objective["objective"], strict=True)) == [
        ("causal", "instruct"),
        ("causal", "next_token"),
        ("t5", "lm_adapt"),
        ("t5", "span_corruption"),
    ]
    # Figure 3(d) of a causal LM: its pre-training steps, no span-corruption step 0
    steps = superglue_frame(panel_runs(runs, "lm_adapt_steps"), "lm_adapt_steps", tasks=TASKS)
    causal = steps[steps["family"] == "causal"]
    assert sorted(causal["lm_adapt_steps"]) == [1_000, 50_000, 100_000]


def test_a_one_family_frame_gives_todays_points_and_columns():
    points = superglue_frame(panel_runs(t5_only(), "prompt_len"), "prompt_len", tasks=TASKS)
    assert list(points.columns) == [
        "size",
        "params",
        "prompt_len",
        "mean",
        "std",
        "n_seeds",
        "n_incomplete",
    ]
    assert t5_only()["family"].eq("t5").all()  # rows without a family read as t5


# ---------------------------------------------------------------------------- the files


@pytest.fixture(scope="module")
def two_family_cli(tmp_path_factory):
    """`python -m repro.plots <two-family frame> --figure1`, drawn once for the tests below:
    its argv, output directory, what it printed and `{name: figure}` as saved."""
    tmp = tmp_path_factory.mktemp("two_families")
    frame = write_csv(two_families(), tmp / "runs.csv")
    out = tmp / "fig"
    argv = [frame, "-o", str(out), "--tasks", *TASKS, "--figure1", "--reference", REFERENCE_CSV]
    with pytest.MonkeyPatch.context() as monkeypatch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = saved_figures(monkeypatch)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(argv) == 0
    return SimpleNamespace(argv=argv, out=out, stdout=stdout.getvalue(), saved=saved)


@pytest.mark.slow
def test_cli_draws_one_file_per_family_and_panel(two_family_cli, capsys):
    cli = two_family_cli
    names = [f"{n}_{f}" for f in ("t5", "causal") for n in [*PANELS, "figure3", "figure1"]]
    assert sorted(p.name for p in cli.out.iterdir()) == sorted(
        f"{n}.{x}" for n in names for x in ("png", "pdf")
    )
    assert sorted(cli.saved) == sorted(names)
    assert "figure3a_prompt_len_causal: " in cli.stdout and "figure1_t5: " in cli.stdout
    # the names the CLI checks before drawing are the names it writes
    runs = two_families()
    assert sorted([*figure3_names(runs), *figure1_names(runs)]) == sorted(names)
    # a second run refuses to overwrite them, naming a family's file
    assert main(cli.argv) == 2
    assert "_t5.png" in capsys.readouterr().err


@pytest.mark.slow
def test_a_t5_only_frame_keeps_todays_file_names_and_titles(tmp_path, monkeypatch):
    saved = saved_figures(monkeypatch)
    out = tmp_path / "fig"
    frame = write_csv(t5_only(), tmp_path / "runs.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = [frame, "-o", str(out), "--tasks", *TASKS, "--figure1"]
        assert main([*argv, "--reference", REFERENCE_CSV]) == 0
    names = [*PANELS, "figure3", "figure1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{x}" for n in names for x in ("png", "pdf")
    )
    assert figure3_names(t5_only()) == [*PANELS, "figure3"]
    assert figure1_names(t5_only()) == ["figure1"]
    titles = {n: saved[n].axes[0].get_title() for n in PANELS}
    assert titles == {
        "figure3a_prompt_len": "(a) Prompt length",
        "figure3b_init": "(b) Prompt initialization",
        "figure3c_objective": "(c) Pre-training method",
        "figure3d_lm_adapt_steps": "(d) LM adaptation steps",
    }
    assert saved["figure3"]._suptitle is None
    assert saved["figure1"].axes[0].get_title() == "Figure 1: prompt tuning vs model size"
    text = "\n".join(all_text(fig) for fig in saved.values())
    assert "causal" not in text and "encoder-decoder" not in text and "[t5]" not in text


@pytest.mark.slow
def test_a_family_without_a_panel_is_left_out_with_a_warning(tmp_path):
    held = {"prompt_len": 100, "init": "class_label", "objective": "next_token"}
    default = [
        r
        for r in family_rows("causal")
        if r["lm_adapt_steps"] == 100_000 and all(r[k] == v for k, v in held.items())
    ]
    runs = to_frame([*family_rows("t5"), *default])  # causal: the default setting alone
    with pytest.warns(UserWarning, match="no Figure 3 of the causal backbones"):
        written = figure3(runs, tmp_path, tasks=TASKS)
    assert sorted(written) == sorted(f"{n}_t5" for n in [*PANELS, "figure3"])
    assert figure3_names(runs) == [f"{n}_t5" for n in [*PANELS, "figure3"]]


# ---------------------------------------------------------------------------- the lines


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_no_line_joins_two_families(two_family_cli):
    """In each family's figure every line sits at that family's sizes; in a panel of a frame
    holding both, each line is one family's (its label says which), never both."""
    for name, fig in two_family_cli.saved.items():
        family = name.rsplit("_", 1)[1]
        for ax in fig.axes:
            lines = drawn_lines(ax)
            assert lines, name
            for label, (xs, _) in lines.items():
                assert sizes_of(xs) == {family}, (name, label)

    runs = two_families()
    for axis in ("prompt_len", "objective", "lm_adapt_steps"):
        points = superglue_frame(panel_runs(runs, axis), axis, tasks=TASKS)
        lines = drawn_lines(plot_panel(points, axis).axes[0])
        for label, (xs, ys) in lines.items():
            family = label.rsplit("[", 1)[1].rstrip("]")
            assert sizes_of(xs) == {family}, (axis, label)
            assert all(y < 45 for y in ys) if family == "causal" else all(y > 25 for y in ys)
        assert {lab.rsplit("[", 1)[1] for lab in lines} == {"t5]", "causal]"}
    points = superglue_frame(panel_runs(runs, None), None, tasks=TASKS)
    with pytest.warns(UserWarning):  # the paper's points are left out beside a causal LM
        lines = drawn_lines(plot_figure1(points, load_reference(REFERENCE_CSV)).axes[0])
    assert {lab: sizes_of(xs) for lab, (xs, _) in lines.items()} == {
        "Prompt Tuning [t5]": {"t5"},
        "Prompt Tuning [causal]": {"causal"},
    }


# ---------------------------------------------------------------------------- the words


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_causal_figures_say_so_and_count_pre_training_steps(two_family_cli):
    saved = two_family_cli.saved
    for name, fig in saved.items():
        title = fig._suptitle.get_text() if name.startswith("figure3_") else fig.axes[0].get_title()
        if name.endswith("_causal"):
            assert "decoder-only (causal) backbones" in title, name
            assert "T5.1.1" not in all_text(fig) and "LM Adaptation" not in all_text(fig)
        else:  # beside a causal figure, a T5 one names its family too
            assert "encoder-decoder (T5) backbones" in title, name

    steps = saved["figure3d_lm_adapt_steps_causal"].axes[0]
    assert steps.get_title().startswith("(d) Pre-training steps")
    legend = steps.get_legend()
    assert legend.get_title().get_text().lower() == "pre-training steps"  # no recipe
    assert [t.get_text() for t in legend.get_texts()] == ["1K", "50K", "100K"]  # in step order
    objective = saved["figure3c_objective_causal"].axes[0].get_legend()
    labels = [t.get_text() for t in objective.get_texts()]
    assert len(labels) == 2 and "next_token" in labels[0] and "instruct" in labels[1]
    t5_steps = saved["figure3d_lm_adapt_steps_t5"].axes[0].get_legend()
    assert t5_steps.get_title().get_text() == "LM adaptation steps (recipe)"


def test_a_one_size_causal_panel_reads_pre_training_steps_on_its_x_axis(tmp_path, capsys):
    runs = to_frame(family_rows("causal", {"lm_160m": 162_322_944}))
    out = tmp_path / "fig"
    frame = write_csv(runs, tmp_path / "runs.csv")
    assert main([frame, "-o", str(out), "--tasks", *TASKS]) == 0
    # one family: today's names
    assert sorted(p.stem for p in out.glob("*.png")) == sorted([*PANELS, "figure3"])
    points = superglue_frame(panel_runs(runs, "lm_adapt_steps"), "lm_adapt_steps", tasks=TASKS)
    ax = plot_panel(points, "lm_adapt_steps", family="causal").axes[0]
    assert ax.get_xlabel().startswith("Pre-training steps, at lm_160m")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1K", "50K", "100K"]
    assert "decoder-only (causal) backbones" in ax.get_title()
    assert ax.get_legend() is None  # one line: no recipe split on a causal LM
