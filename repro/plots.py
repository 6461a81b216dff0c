"""The paper's figures redrawn from our runs: Figure 3 (a)-(d) panels and Figure 1.

Every panel reads a SuperGLUE frame (`repro.collect.superglue_frame`): x = frozen model
parameters (log scale, one tick per size present), y = SuperGLUE score, one line per axis value
with the paper's legend label, error bars = std over seeds. Points whose `mean` is NA (no seed
with all tasks finished) are not drawn; a single seed draws no error bar.

    runs = collect_runs(["multirun/fig3a"])
    fig = plot_panel(superglue_frame(panel_runs(runs, "prompt_len"), "prompt_len"), "prompt_len")
    save_figure(fig, "results/figures", "figure3a_prompt_len")
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display (CI, clusters, notebooks run headless)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

from repro.collect import ABLATION_AXES, SUPERGLUE_TASKS, panel_runs, superglue_frame

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
    },
    "lm_adapt_steps": {0: "0K", 10_000: "10K", 50_000: "50K", 100_000: "100K"},
}
PANEL_TITLES = {
    "prompt_len": "(a) Prompt length",
    "init": "(b) Prompt initialization",
    "objective": "(c) Pre-training method",
    "lm_adapt_steps": "(d) LM adaptation steps",
}
SIZE_LABELS = {"small": "Small", "base": "Base", "large": "Large", "xl": "XL", "xxl": "XXL"}
_REFERENCE_MARKERS = ("*", "D", "s", "^", "v", "P")
# Figure 3(d): the LM-adaptation recipe of each line (`lm_adapt_source` of the frame), shown in
# its legend label and its line style; a step count keeps its colour across recipes.
SOURCE_LABELS = {"released": "released", "own": "own", "none": "none: T5.1.1"}
SOURCE_STYLES = {"released": ("-", "o"), "own": ("--", "s"), "none": (":", "^")}
_UNKNOWN_SOURCE = ("source unknown", ("-.", "x"))
# Rows of results/paper/reference.csv whose split says the number is not checked are not drawn.
UNSTATED_SPLITS = ("", "unverified")


class ReferenceWarning(UserWarning):
    """Reference rows left out of a plot because their source is not stated."""


def axis_label(axis: str, value: Any) -> str:
    """The paper's legend label for one axis value (`init`, `class_label` → `Class Label`)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # CSV round trips turn 100 into 100.0
    labels = AXIS_LABELS.get(axis, {})
    if value in labels:
        return labels[value]
    if axis == "lm_adapt_steps" and isinstance(value, int):
        return f"{value // 1000}K" if value % 1000 == 0 else str(value)
    return str(value)


def _axis_order(axis: str, values: Sequence[Any]) -> list[Any]:
    """Paper order for known values (the label table's order), then the rest sorted."""
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


def _source_legend(source: Any) -> tuple[str, tuple[str, str]]:
    """(legend text, (line style, marker)) of an LM-adaptation recipe."""
    if source in SOURCE_STYLES:
        return SOURCE_LABELS[source], SOURCE_STYLES[source]
    return _UNKNOWN_SOURCE if source is None else (str(source), _UNKNOWN_SOURCE[1])


def _size_ticks(ax: Axes, ticks: dict[float, str]) -> None:
    """One labelled tick per model size on the log x axis, no minor-tick clutter."""
    xs = sorted(ticks)
    ax.set_xscale("log")
    ax.set_xticks(xs, [ticks[x] for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(xs) == 1:  # a single size: give the log axis some room either side
        ax.set_xlim(xs[0] / 2, xs[0] * 2)


def _size_label(size: Any, params: float) -> str:
    if isinstance(size, str) and size.lower() in SIZE_LABELS:
        return SIZE_LABELS[size.lower()]
    if isinstance(size, str) and size:
        return size
    return f"{params / 1e6:.3g}M" if params < 1e9 else f"{params / 1e9:.3g}B"


def _check_frame(frame: pd.DataFrame, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise KeyError(
            f"frame lacks columns {missing} (have {list(frame.columns)}); "
            "pass the output of repro.collect.superglue_frame"
        )
    if frame["params"].isna().any():
        sizes = sorted(map(str, frame.loc[frame["params"].isna(), "size"].unique()))
        raise ValueError(f"no parameter count for size(s) {sizes}: the x axis needs `params`")


def plot_panel(
    frame: pd.DataFrame,
    axis: str,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    reference: pd.DataFrame | None = None,
    ylabel: str = "SuperGLUE Score",
) -> Figure:
    """One Figure 3 panel: a line per value of `axis`, mean ± std over seeds vs model size.

    Args:
        frame: `superglue_frame(runs, axis)` (columns size, params, <axis>, mean, std).
        axis: `prompt_len`, `init`, `objective`, `lm_adapt_steps` (or any column of `frame`).
            For `lm_adapt_steps`, a frame with `lm_adapt_source` draws one line per step count
            and recipe, labelled e.g. "100K (released)", "10K (own)", "0K (none: T5.1.1)",
            the recipe also in the line style (released solid, own dashed, none dotted).
        ax: draw into this axes (e.g. one cell of a grid); default a new figure.
        title: default the paper's panel caption, e.g. "(a) Prompt length".
        reference: optional reference points (`results/paper/reference.csv` layout); only
            rows with a stated source are drawn (`stated_reference`).
        ylabel: y-axis label; say which tasks were averaged when they are not SuperGLUE's.

    Returns:
        The figure holding `ax`.
    """
    _check_frame(frame, ["size", "params", axis, "mean", "std"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.6))
    fig = ax.figure
    drawn = frame[frame["mean"].notna()]
    by_source = axis == "lm_adapt_steps" and "lm_adapt_source" in drawn.columns
    for i, value in enumerate(_axis_order(axis, list(drawn[axis].dropna().unique()))):
        rows = drawn[drawn[axis] == value]
        for source in _source_order(rows["lm_adapt_source"]) if by_source else [None]:
            line = rows if not by_source else rows[_same_source(rows["lm_adapt_source"], source)]
            label, (linestyle, marker) = axis_label(axis, value), ("-", "o")
            if by_source:
                name, (linestyle, marker) = _source_legend(source)
                label = f"{label} ({name})"
            line = line.sort_values("params")
            ax.errorbar(
                line["params"].astype(float).to_numpy(),
                line["mean"].astype(float).to_numpy(),
                yerr=np.nan_to_num(line["std"].astype(float).to_numpy()),  # 1 seed: no bar
                color=f"C{i % 10}",
                linestyle=linestyle,
                marker=marker,
                markersize=4,
                capsize=3,
                label=label,
            )
    ticks = {
        float(p): _size_label(s, float(p))
        for s, p in zip(drawn["size"], drawn["params"], strict=True)
    }
    if reference is not None:
        ticks.update(_draw_reference(ax, reference))
    if ticks:
        _size_ticks(ax, ticks)
    ax.set_xlabel("Model Parameters")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else PANEL_TITLES.get(axis, axis))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def stated_reference(reference: pd.DataFrame) -> pd.DataFrame:
    """The reference rows whose source is stated: a row whose `split` is `unverified` (or
    empty) or whose `source` is empty is left out, with one `ReferenceWarning` naming them."""
    needed = ["method", "model", "params", "superglue", "split", "source"]
    missing = [c for c in needed if c not in reference.columns]
    if missing:
        raise KeyError(f"reference table lacks columns {missing}; see results/paper/README.md")
    split = reference["split"].fillna("").astype(str).str.strip()
    source = reference["source"].fillna("").astype(str).str.strip()
    stated = ~split.str.lower().isin(UNSTATED_SPLITS) & source.ne("")
    if not stated.all():
        skipped = [
            f"{r.method} ({r.model}): split={s!r}, source={src!r}"
            for r, s, src in zip(
                reference[~stated].itertuples(index=False),
                split[~stated],
                source[~stated],
                strict=True,
            )
        ]
        warnings.warn(
            f"reference rows without a stated source are not drawn: {'; '.join(skipped)}",
            ReferenceWarning,
            stacklevel=3,
        )
    return reference[stated]


def _draw_reference(ax: Axes, reference: pd.DataFrame) -> dict[float, str]:
    """Scatter the paper's reported points whose source is stated (`stated_reference`), each
    labelled with its split; returns extra x ticks (e.g. GPT-3 175B)."""
    ticks: dict[float, str] = {}
    for i, row in enumerate(stated_reference(reference).itertuples(index=False)):
        ax.scatter(
            [float(row.params)],
            [float(row.superglue)],
            marker=_REFERENCE_MARKERS[i % len(_REFERENCE_MARKERS)],
            s=60,
            color="black",  # the paper's numbers stay apart from our coloured lines
            zorder=3,
            label=f"{row.method} ({row.model}, paper, {str(row.split).strip()})",
        )
        model = str(row.model)
        size = model.removeprefix("T5-").lower()
        ticks[float(row.params)] = (
            SIZE_LABELS.get(size, model) if model.startswith("T5-") else model
        )
    return ticks


def plot_figure1(
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    ax: Axes | None = None,
    ylabel: str = "SuperGLUE Score",
) -> Figure:
    """Figure 1: our prompt tuning (mean ± std over seeds) vs T5 size, with the paper's points.

    Args:
        frame: `superglue_frame(panel_runs(runs, None), None)`: one row per size.
        reference: `results/paper/reference.csv` (GPT-3 prompt design, T5-XXL model tuning and
            prompt tuning as the paper reports them).
    """
    _check_frame(frame, ["size", "params", "mean", "std"])
    if frame["params"].duplicated().any():
        raise ValueError(
            "Figure 1 needs one point per size, but some sizes have several rows; build the frame "
            "with superglue_frame(panel_runs(runs, None), None)"
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
    fig = ax.figure
    drawn = frame[frame["mean"].notna()].sort_values("params")
    ax.errorbar(
        drawn["params"].astype(float).to_numpy(),
        drawn["mean"].astype(float).to_numpy(),
        yerr=np.nan_to_num(drawn["std"].astype(float).to_numpy()),
        marker="o",
        markersize=4,
        capsize=3,
        label="Prompt Tuning (ours)",
    )
    ticks = {
        float(p): _size_label(s, float(p))
        for s, p in zip(drawn["size"], drawn["params"], strict=True)
    }
    ticks.update(_draw_reference(ax, reference))
    _size_ticks(ax, ticks)
    ax.set_xlabel("Model Parameters")
    ax.set_ylabel(ylabel)
    ax.set_title("Figure 1: prompt tuning vs model size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def load_reference(path: str | Path = "results/paper/reference.csv") -> pd.DataFrame:
    """The paper's reported numbers (see results/paper/README.md for each one's source)."""
    return pd.read_csv(path)


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write `<out_dir>/<name>.png` and `.pdf`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return paths


def _score_label(tasks: Sequence[str] | None) -> str:
    """SuperGLUE's name only for SuperGLUE's 8 tasks; smoke/toy runs say what they average."""
    if tasks is None or tuple(tasks) == SUPERGLUE_TASKS:
        return "SuperGLUE Score"
    return f"Mean score ({', '.join(tasks)})"


# The columns of a run frame (`repro.collect`) that the figures read.
RUN_COLUMNS = ("size", "params", "seed", "task", "status", "score")


def no_points_reason(runs: pd.DataFrame, tasks: Sequence[str] | None) -> str:
    """Why a run frame gives no figure point for `tasks` (default SuperGLUE's 8), in one line
    naming what was asked and what the frame holds: a task it has no run of, a task without a
    finished run that has a score, or no point with a scored run of every task."""
    asked = list(tasks) if tasks is not None else list(SUPERGLUE_TASKS)
    held = sorted(map(str, runs["task"].dropna().unique()))
    absent = [t for t in asked if t not in held]
    if absent:
        return (
            f"nothing to plot: the frame has no run of task(s) {absent} (asked for {asked}); "
            f"it holds runs of {held}: choose among them with --tasks"
        )
    mine = runs[runs["task"].isin(asked)]
    finished = mine["status"].eq("finished")
    scored = finished & mine["score"].notna()
    unscored = [t for t in asked if not scored[mine["task"].eq(t)].any()]
    if unscored:
        theirs = mine[mine["task"].isin(unscored)]
        statuses = ", ".join(f"{n} {s}" for s, n in theirs["status"].value_counts().items())
        no_score = int((finished & mine["score"].isna())[theirs.index].sum())
        nan = f" ({no_score} finished with score NaN)" if no_score else ""
        return (
            f"nothing to plot: no run of task(s) {unscored} is finished with a score; the frame "
            f"holds {statuses} run(s) of them{nan}"
        )
    return (
        f"nothing to plot: no figure point (size, axis value, seed) has a finished, scored run of "
        f"every task in {asked}; the frame has scored runs of each, never all at one point"
    )


def present_panels(runs: pd.DataFrame) -> list[str]:
    """The Figure 3 axes that take more than one value among a run frame's finished runs."""
    done = runs[runs["status"] == "finished"]
    return [
        a
        for a in ABLATION_AXES
        if a in done.columns and panel_runs(done, a)[a].dropna().nunique() > 1
    ]


def figure3(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    reference: pd.DataFrame | None = None,
) -> dict[str, list[Path]]:
    """Draw every Figure 3 panel present in a run frame, one file per panel plus a grid.

    Each panel uses `panel_runs(frame_runs, axis)` (other axes at the paper's defaults) and
    `superglue_frame(..., tasks=tasks)`.

    Returns:
        `{name: [png, pdf]}` for `figure3<letter>_<axis>` and the combined `figure3`.

    Raises:
        ValueError: no axis takes more than one value among the finished runs, or no panel has a
            point to draw (`no_points_reason` says why).
    """
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
        fig = plot_panel(frame, a, reference=reference, ylabel=_score_label(tasks))
        name = f"figure3{'abcd'[ABLATION_AXES.index(a)]}_{a}"
        written[name] = save_figure(fig, out_dir, name)
        plt.close(fig)

    cols = min(2, len(axes))
    rows = math.ceil(len(axes) / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for cell, a in zip(grid.flat, axes, strict=False):
        plot_panel(frames[a], a, ax=cell, reference=reference, ylabel=_score_label(tasks))
    for cell in list(grid.flat)[len(axes) :]:
        cell.set_visible(False)
    fig.tight_layout()
    written["figure3"] = save_figure(fig, out_dir, "figure3")
    plt.close(fig)
    return written


def figure1(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    reference: pd.DataFrame,
    *,
    tasks: Sequence[str] | None = None,
) -> list[Path]:
    """Figure 1 from a run frame: runs at the paper's default setting vs size; writes PNG+PDF.

    Raises:
        ValueError: no size has a point to draw (`no_points_reason` says why).
    """
    frame = superglue_frame(panel_runs(frame_runs, None), None, tasks=tasks)
    if not frame["mean"].notna().any():
        raise ValueError(no_points_reason(frame_runs, tasks))
    fig = plot_figure1(frame, reference, ylabel=_score_label(tasks))
    paths = save_figure(fig, out_dir, "figure1")
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m repro.plots results/<name>.csv -o results/figures [--tasks t1 t2] [--figure1]`."""
    import argparse

    from repro.collect import load_frame

    parser = argparse.ArgumentParser(prog="python -m repro.plots", description=main.__doc__)
    parser.add_argument("frame", help="a run frame written by python -m repro.collect")
    parser.add_argument("-o", "--out-dir", default="results/figures", help="where PNG+PDF go")
    parser.add_argument(
        "--tasks", nargs="+", help="tasks averaged per point (default: SuperGLUE's 8)"
    )
    parser.add_argument("--figure1", action="store_true", help="also draw Figure 1")
    parser.add_argument("--reference", default="results/paper/reference.csv")
    args = parser.parse_args(argv)
    try:
        runs = load_frame(args.frame)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: cannot read the run frame {args.frame}: {reason}", file=sys.stderr)
        return 2
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        print(
            f"error: {args.frame} lacks column(s) {missing}; the figures read {list(RUN_COLUMNS)}: "
            "write the frame with python -m repro.collect",
            file=sys.stderr,
        )
        return 2
    try:
        # A frame of one sweep over model size holds Figure 1 only: no Figure 3 panel to draw.
        drawn_alone = args.figure1 and not present_panels(runs)
        written = {} if drawn_alone else figure3(runs, args.out_dir, tasks=args.tasks)
        if args.figure1:
            written["figure1"] = figure1(
                runs, args.out_dir, load_reference(args.reference), tasks=args.tasks
            )
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, paths in written.items():
        print(f"{name}: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
