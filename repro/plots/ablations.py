"""Figure 3 (a)-(d), the ablations: one panel per ablation axis, a line per axis value, and
the panels as one grid; `figure3` draws every panel a run frame holds, once per backbone family
(`repro.plots.family`: files `<name>_<family>` where the frame holds several).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from repro.checkpoints import model_lm_adapt_steps
from repro.collect.superglue import ABLATION_AXES, family_groups, panel_runs, superglue_frame
from repro.plots.drawing import (
    Line,
    check_frame,
    count_label,
    draw,
    draw_values,
    frame_score_label,
    no_points_reason,
    save_figure,
    score_label,
    share_score_axis,
    size_label,
)
from repro.plots.family import (
    CAUSAL,
    CAUSAL_LEGEND_TITLES,
    CAUSAL_PANEL_TITLES,
    FAMILY_STYLES,
    T5,
    axis_text,
    draw_per_family,
    families_of,
    family_file,
    family_note,
    family_rows,
    family_title,
)
from repro.plots.reference import (
    TOY_NOTE,
    ReferenceWarning,
    non_t5_sizes,
    references_for,
)

# Legend labels and line order exactly as in the paper's Figure 3.
AXIS_LABELS: dict[str, dict[Any, str]] = {
    "prompt_len": {1: "1", 5: "5", 20: "20", 100: "100", 150: "150"},
    "init": {
        "random_uniform": "Random Uniform",
        "sampled_vocab": "Sampled Vocab",
        "class_label": "Class Label",
    },
    "objective": {
        "span_corruption": "Span Corruption",
        "span_corruption_sentinel": "Span Corruption + Sentinel",
        "lm_adapt": "LM Adaptation (100K)",
        # a decoder-only LM's (repro.plots.family): as pre-trained, and instruction-tuned
        "next_token": "next_token (pre-trained)",
        "instruct": "instruct (instruction-tuned)",
    },
    "lm_adapt_steps": {0: "0K", 10_000: "10K", 50_000: "50K", 100_000: "100K"},
}
PANEL_TITLES = {
    "prompt_len": "(a) Prompt length",
    "init": "(b) Prompt initialization",
    "objective": "(c) Pre-training method",
    "lm_adapt_steps": "(d) LM adaptation steps",
}
# The legend's title: which axis the lines vary.
LEGEND_TITLES = {
    "prompt_len": "Prompt length",
    "init": "Prompt initialization",
    "objective": "Pre-training objective",
    "lm_adapt_steps": "LM adaptation steps",
}
# Figure 3(d): the LM-adaptation recipe of each line (`lm_adapt_source` of the frame), shown in
# its legend label and its line style; a step count keeps its colour across recipes.
SOURCE_LABELS = {"released": "released", "own": "own", "none": "none: T5.1.1"}
TOY_NONE_LABEL = "none: span corruption"  # a toy model's 0-step checkpoint is no T5.1.1
SOURCE_STYLES = {"released": ("-", "o"), "own": ("--", "s"), "none": (":", "^")}
_UNKNOWN_SOURCE = ("source unknown", ("-.", "x"))
# The axes whose values are ordered: a one-size panel joins its points along them.
ORDERED_AXES = ("prompt_len", "lm_adapt_steps")


def axis_label(axis: str, value: Any, family: str = T5) -> str:
    """The paper's legend label for one axis value (`init`, `class_label` → `Class Label`); a
    causal LM's step counts in thousands wherever they fall (Pythia's 143000 → `143K`)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # CSV round trips turn 100 into 100.0
    if family != T5 and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy integers too (the T5 labels are left as they were)
    labels = AXIS_LABELS.get(axis, {})
    if value in labels:
        return labels[value]
    if axis == "lm_adapt_steps" and isinstance(value, int):
        return f"{value // 1000}K" if value % 1000 == 0 else str(value)
    return str(value)


def _lm_adapt_label(sizes: pd.Series) -> str:
    """Panel (c)'s LM-adapted line, named by the checkpoint its sizes load (held at each size's
    own by `panel_runs`): "LM Adaptation (100K)" for T5, "(500)" for the toy world's."""
    steps = sorted({model_lm_adapt_steps(size) for size in sizes.dropna().unique()})
    counts = "/".join(axis_label("lm_adapt_steps", n) for n in steps) or "100K"
    return f"LM Adaptation ({counts})"


def _axis_order(axis: str, values: Sequence[Any], family: str = T5) -> list[Any]:
    """Paper order for known values (the label table's order), then the rest sorted; a causal
    LM's step counts (any, e.g. Pythia's step<N>) in their numeric order."""
    if family != T5 and axis == "lm_adapt_steps":
        return sorted(values, key=float)
    known = list(AXIS_LABELS.get(axis, {}))

    def key(v: Any) -> tuple:
        number = isinstance(v, numbers.Real) and not isinstance(v, bool)
        v2 = int(v) if number and float(v).is_integer() else v
        if v2 in known:
            return (0, known.index(v2), "")
        # numpy integers are not `int`: compare every real number as a number (50 < 250)
        return (1, float(v2) if number else 0.0, str(v2))

    return sorted(values, key=key)


def _source_order(sources: pd.Series) -> list[Any]:
    """The recipes present in a Figure 3(d) line group: released, own, none, then unknown (NA)."""
    present = list(sources.dropna().unique())
    known = [s for s in SOURCE_STYLES if s in present]
    other = sorted(s for s in present if s not in SOURCE_STYLES)
    return known + other + ([None] if sources.isna().any() else [])


def _same_source(sources: pd.Series, source: Any) -> pd.Series:
    return sources.isna() if source is None else sources.eq(source).fillna(False).astype(bool)


def _source_legend(source: Any, toy: bool = False) -> tuple[str, tuple[str, str]]:
    """(legend text, (line style, marker)) of an LM-adaptation recipe; a toy frame's "none"
    recipe is its own span-corruption checkpoint, not T5.1.1."""
    if source == "none" and toy:
        return TOY_NONE_LABEL, SOURCE_STYLES[source]
    if source in SOURCE_STYLES:
        return SOURCE_LABELS[source], SOURCE_STYLES[source]
    return _UNKNOWN_SOURCE if source is None else (str(source), _UNKNOWN_SOURCE[1])


def plot_panel(
    frame: pd.DataFrame,
    axis: str,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    reference: pd.DataFrame | None = None,
    ylabel: str | None = None,
    family: str | None = None,
) -> Figure:
    """One Figure 3 panel: a line per value of `axis`, mean ± std over seeds vs model size.

    A frame of one model size is drawn against the axis' values instead (`_plot_one_size`):
    with one size the paper's x axis would hold one tick and the lines would shrink to dots
    dodged sideways around it, with nothing joining them; the values themselves are what varies.

    Args:
        frame: `superglue_frame(runs, axis)` (columns size, params, <axis>, mean, std; n_seeds
            if present marks single-seed points).
        axis: `prompt_len`, `init`, `objective`, `lm_adapt_steps` (or any column of `frame`).
            For `lm_adapt_steps`, a frame with `lm_adapt_source` draws one line per step count
            and recipe, labelled e.g. "100K (released)", "10K (own)", "0K (none: T5.1.1)"
            ("0K (none: span corruption)" for a toy model), the recipe also in the line style
            (released solid, own dashed, none dotted).
        ax: draw into this axes (e.g. one cell of a grid); default a new figure.
        title: default the paper's panel caption, e.g. "(a) Prompt length" (+ "toy model, not
            T5" for a frame of other sizes).
        reference: optional reference points (`results/paper/reference.csv` layout); drawn only
            beside T5.1.1 sizes and only rows with a stated source (`references_for`).
        ylabel: y-axis label; default `frame_score_label` ("SuperGLUE Score" only for T5.1.1
            sizes, "Score" for a toy or tiny model's frame).
        family: the backbone family of a frame without a `family` column (`t5`, `causal`):
            given, the title names it (`repro.plots.family`); a causal panel also uses the
            causal words (Figure 3(d): "Pre-training steps", no LM-adaptation recipe). A frame
            of several families draws a line per axis value and family, never joining two.

    Returns:
        The figure holding `ax`.
    """
    check_frame(frame, ["size", "params", axis, "mean", "std"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.9))
    fig = ax.figure
    drawn = frame[frame["mean"].notna()]
    families = families_of(drawn, family)
    if title is None:
        title = family_title(
            axis_text(PANEL_TITLES, CAUSAL_PANEL_TITLES, axis, families), drawn, family
        )
    ylabel = ylabel if ylabel is not None else frame_score_label(frame)
    if len(families) == 1 and drawn["params"].nunique() == 1:
        _plot_one_size(ax, drawn, axis, reference, title=title, ylabel=ylabel, family=families[0])
        return fig
    several = len(families) > 1
    has_source = axis == "lm_adapt_steps" and "lm_adapt_source" in drawn.columns
    lines = []
    fam0 = CAUSAL if CAUSAL in families else T5  # how values are ordered and labelled
    for i, value in enumerate(_axis_order(axis, list(drawn[axis].dropna().unique()), fam0)):
        for fam in families:
            rows = drawn[drawn[axis] == value]
            rows = family_rows(rows, fam) if several else rows
            by_source = has_source and fam == T5  # a causal LM's steps have no recipe
            toy = bool(non_t5_sizes(family_rows(drawn, fam) if several else drawn))
            for source in _source_order(rows["lm_adapt_source"]) if by_source else [None]:
                line = (
                    rows if not by_source else rows[_same_source(rows["lm_adapt_source"], source)]
                )
                label, (linestyle, marker) = axis_label(axis, value, fam0), ("-", "o")
                if axis == "objective" and value == "lm_adapt":
                    label = _lm_adapt_label(line["size"])
                if several:
                    linestyle, marker = FAMILY_STYLES.get(fam, ("--", "s"))
                if by_source:
                    name, (linestyle, marker) = _source_legend(source, toy)
                    label = f"{label} ({name})"
                if several:
                    label = f"{label} [{fam}]"
                if len(line):
                    line = line.sort_values("params")
                    lines.append(Line(label, line, f"C{i % 10}", linestyle, marker))
    legend_title = axis_text(LEGEND_TITLES, CAUSAL_LEGEND_TITLES, axis, families)
    if has_source and T5 in families:
        legend_title += " (recipe)"
    draw(
        ax,
        lines,
        references_for(drawn, reference),
        legend_title=legend_title,
        title=title,
        ylabel=ylabel,
    )
    return fig


def _plot_one_size(
    ax: Axes,
    drawn: pd.DataFrame,
    axis: str,
    reference: pd.DataFrame | None,
    *,
    title: str,
    ylabel: str,
    family: str = T5,
) -> None:
    """A panel of one model size: x = the axis' values in the paper's order (ticked with its
    legend labels), one line through the means with error bars and a band of ± std over seeds
    (one line per recipe in Figure 3(d)). An ordered axis (prompt length, steps) is joined by
    the line; initialisations and objectives stay separate markers, as no order joins them.
    The size is named in the x label; the paper's points, which sit at a model size, have no
    place on this axis and are left out with a `ReferenceWarning`. A causal LM's x axis says
    what its `lm_adapt_steps` count: "Pre-training steps" (`CAUSAL_LEGEND_TITLES`)."""
    if references_for(drawn, reference) is not None:  # (which warns beside a toy model)
        warnings.warn(
            "the paper's reference points are left out: a panel of one model size is drawn "
            "against its axis' values, where a point at a model size has no place",
            ReferenceWarning,
            stacklevel=3,
        )
    values = _axis_order(axis, list(drawn[axis].dropna().unique()), family)
    ticks = [axis_label(axis, v, family) for v in values]
    if axis == "objective" and "lm_adapt" in values:
        ticks[values.index("lm_adapt")] = _lm_adapt_label(drawn["size"])
    rows = drawn.assign(
        x=drawn[axis].map(lambda v: next(i for i, u in enumerate(values) if u == v)),
        point=drawn[axis].map(lambda v: axis_label(axis, v, family)),
    ).sort_values("x")
    lines = [Line("", rows, "C0")]  # one line: the ticks say what its points are
    if axis == "lm_adapt_steps" and "lm_adapt_source" in rows.columns and family == T5:
        # a line per recipe
        toy = bool(non_t5_sizes(drawn))
        lines = []
        for i, source in enumerate(_source_order(rows["lm_adapt_source"])):
            name, (linestyle, marker) = _source_legend(source, toy)
            sel = rows[_same_source(rows["lm_adapt_source"], source)]
            lines.append(Line(name, sel, f"C{i % 10}", linestyle, marker))
    size, params = drawn["size"].iloc[0], float(drawn["params"].iloc[0])
    draw_values(
        ax,
        lines,
        ticks,
        connect=axis in ORDERED_AXES or pd.api.types.is_numeric_dtype(drawn[axis]),
        xlabel=f"{axis_text(LEGEND_TITLES, CAUSAL_LEGEND_TITLES, axis, [family])}, at "
        f"{size_label(size, params)} "
        f"({count_label(params)} parameters)",
        title=title,
        ylabel=ylabel,
        legend_title="LM adaptation recipe",
    )


def plot_grid(
    frames: Mapping[str, pd.DataFrame],
    *,
    ylabel: str | None = None,
    reference: pd.DataFrame | None = None,
    suptitle: str | None = None,
    family: str | None = None,
) -> Figure:
    """Figure 3 as one figure: a panel per `{axis: superglue frame}`, in the given order.

    Exactly one axes per panel: 1-3 panels side by side, 4 as the paper's 2x2 grid. The panels
    share one score range (`share_score_axis`), so one score sits at the same height in each.
    When every panel is a toy model's, "toy model, not T5" is said once, under the figure's
    title, instead of under each panel's. So is the backbone family of a figure that names it
    (`family` given, or frames of a causal LM or of several families: `plot_panel`).
    """
    n = len(frames)
    if n == 0:
        raise ValueError("no panel to draw")
    cols = n if n <= 3 else 2
    rows = math.ceil(n / cols)
    fig, grid = plt.subplots(
        rows, cols, figsize=(6.4 * cols, 3.9 * rows), squeeze=False, layout="constrained"
    )
    cells = list(grid.flat)
    for cell in cells[n:]:  # only for more than 4 panels: no empty slot left behind
        cell.remove()
    drawn = [f[f["mean"].notna()] for f in frames.values()]
    if family is not None or any(families_of(f) != [T5] for f in drawn):
        held = [f[[c for c in ("family", "size", "params") if c in f.columns]] for f in drawn]
        shown = pd.concat(held, ignore_index=True)
        families = families_of(shown, family)
        for cell, (axis, frame) in zip(cells, frames.items(), strict=False):
            title = axis_text(PANEL_TITLES, CAUSAL_PANEL_TITLES, axis, families)
            plot_panel(
                frame, axis, ax=cell, reference=reference, ylabel=ylabel, title=title, family=family
            )
        share_score_axis(cells[:n])
        fig.suptitle(f"{suptitle or 'Figure 3'}\n({family_note(shown, family)})")
        return fig
    toy = all(non_t5_sizes(f) for f in drawn)
    for cell, (axis, frame) in zip(cells, frames.items(), strict=False):
        title = PANEL_TITLES.get(axis, axis) if toy else None
        plot_panel(frame, axis, ax=cell, reference=reference, ylabel=ylabel, title=title)
    share_score_axis(cells[:n])
    if toy:
        suptitle = f"{suptitle or 'Figure 3'}\n({TOY_NOTE})"
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def present_panels(runs: pd.DataFrame) -> list[str]:
    """The Figure 3 axes that take more than one value among a run frame's finished runs (of
    one backbone family: an axis present for any family)."""
    done = runs[runs["status"] == "finished"]
    present = set()
    for rows in family_groups(done).values():
        present |= {
            a
            for a in ABLATION_AXES
            if a in rows.columns and panel_runs(rows, a)[a].dropna().nunique() > 1
        }
    return [a for a in ABLATION_AXES if a in present]


def panel_name(axis: str) -> str:
    """A Figure 3 panel's file name (without suffix): ``figure3a_prompt_len``, ..."""
    return f"figure3{'abcd'[ABLATION_AXES.index(axis)]}_{axis}"


def figure3_names(runs: pd.DataFrame) -> list[str]:
    """The files (without suffix) :func:`figure3` writes for a run frame: every present panel
    and the grid ``figure3``; none if no panel is present. Where the frame holds several
    backbone families, each family's, named ``<name>_<family>`` (``figure3a_prompt_len_causal``,
    ``figure3_causal``: `repro.plots.family.family_file`)."""
    groups = family_groups(runs)
    names = []
    for family, rows in groups.items():
        panels = [panel_name(a) for a in present_panels(rows)]
        names += [
            family_file(n, family, len(groups) > 1) for n in panels + ["figure3"] * bool(panels)
        ]
    return names


def figure3(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    reference: pd.DataFrame | None = None,
) -> dict[str, list[Path]]:
    """Draw every Figure 3 panel present in a run frame, one file per panel plus a grid.

    Each panel uses `panel_runs(frame_runs, axis)` (other axes at the paper's defaults) and
    `superglue_frame(..., tasks=tasks)`. A frame of several backbone families is drawn once per
    family (`figure3_names`); a family without a panel or a point is left out with a warning.

    Returns:
        `{name: [png, pdf]}` for `figure3<letter>_<axis>` and the combined `figure3` (each
        `..._<family>` for a frame of several families).

    Raises:
        ValueError: no axis takes more than one value among the finished runs, or no panel has a
            point to draw (`no_points_reason` says why); of every family.
    """
    groups = family_groups(frame_runs)
    if len(groups) == 1:
        family = next(iter(groups))
        family = None if family == T5 else family  # T5 alone: the paper's titles
        return _figure3(frame_runs, out_dir, tasks, reference, family, several=False)
    return draw_per_family(
        groups,
        lambda family, runs: _figure3(runs, out_dir, tasks, reference, family, several=True),
        "Figure 3",
    )


def _figure3(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    tasks: Sequence[str] | None,
    reference: pd.DataFrame | None,
    family: str | None,
    *,
    several: bool,
) -> dict[str, list[Path]]:
    """`figure3` of one family's runs (`family` None: T5 alone, titled as the paper's)."""
    axes = present_panels(frame_runs)
    if not axes:
        raise ValueError(
            f"no Figure 3 panel in this frame: none of {ABLATION_AXES} takes two values among "
            "its finished runs"
        )
    frames = {a: superglue_frame(panel_runs(frame_runs, a), a, tasks=tasks) for a in axes}
    if not any(frame["mean"].notna().any() for frame in frames.values()):
        raise ValueError(no_points_reason(frame_runs, tasks))
    written: dict[str, list[Path]] = {}
    for a, frame in frames.items():
        fig = plot_panel(frame, a, reference=reference, ylabel=score_label(tasks), family=family)
        name = family_file(panel_name(a), str(family), several)
        written[name] = save_figure(fig, out_dir, name)
        plt.close(fig)

    fig = plot_grid(frames, ylabel=score_label(tasks), reference=reference, family=family)
    name = family_file("figure3", str(family), several)
    written[name] = save_figure(fig, out_dir, name)
    plt.close(fig)
    return written
