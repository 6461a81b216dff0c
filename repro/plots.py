"""The paper's figures redrawn from our runs: Figure 3 (a)-(d) panels and Figure 1.

Every panel reads a SuperGLUE frame (`repro.collect.superglue_frame`) and is drawn the way the
paper's are, with what a reader needs to trust it:

- x = frozen model parameters on a log axis, one tick at each size's parameter count (labelled
  with the count, e.g. "77M", "11.1B"); the size names ("Small" … "XXL") sit at the same
  positions on a top axis. A single size gets a decade around it.
- y = SuperGLUE score, limits always inside [0, 100] (a saturated panel reads 90-100, never
  95-105), at least 10 points tall.
- one line per axis value with the paper's legend label; the legend (outside the axes, so it
  covers no point) has a title naming the axis, e.g. "Prompt length".
- mean ± std over seeds: error bars and a light band. A point with one seed has no spread, and
  the legend says so ("1 seed: no spread") rather than drawing nothing silently.
- series never hide each other: at each size the lines are spread around the tick by a small
  fixed factor (the "dodge", `DODGE_FRACTION`), the same for every point of a line.
- the paper's reference points (`results/paper/reference.csv`: T5-XXL, GPT-3) are drawn only
  next to T5.1.1 sizes (`non_t5_sizes`): beside a toy or tiny model they would read as a
  comparison, so they are left out with a `ReferenceWarning`, and the plot says "toy model,
  not T5". Points whose `mean` is NA (no seed with all tasks finished) are not drawn.

    runs = collect_runs(["multirun/fig3a"])
    fig = plot_panel(superglue_frame(panel_runs(runs, "prompt_len"), "prompt_len"), "prompt_len")
    save_figure(fig, "results/figures", "figure3a_prompt_len")  # .png and .pdf
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display (CI, clusters, notebooks run headless)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from repro.collect import (
    ABLATION_AXES,
    SUPERGLUE_TASKS,
    T5_PARAMS,
    figure1_runs,
    panel_runs,
    superglue_frame,
)
from repro.config import model_lm_adapt_steps
from repro.methods import DEFAULT_METHOD, METHODS

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
# The legend's title: which axis the lines vary.
LEGEND_TITLES = {
    "prompt_len": "Prompt length",
    "init": "Prompt initialization",
    "objective": "Pre-training objective",
    "lm_adapt_steps": "LM adaptation steps",
}
# Figure 1: one colour per method (the paper's legend order: model tuning lines first).
METHOD_COLORS = {"model": "C3", "model_multitask": "C1", "prompt": "C0", "lora": "C2"}
SIZE_LABELS = {"small": "Small", "base": "Base", "large": "Large", "xl": "XL", "xxl": "XXL"}
_REFERENCE_MARKERS = ("*", "D", "s", "^", "v", "P")
# Figure 3(d): the LM-adaptation recipe of each line (`lm_adapt_source` of the frame), shown in
# its legend label and its line style; a step count keeps its colour across recipes.
SOURCE_LABELS = {"released": "released", "own": "own", "none": "none: T5.1.1"}
SOURCE_STYLES = {"released": ("-", "o"), "own": ("--", "s"), "none": (":", "^")}
_UNKNOWN_SOURCE = ("source unknown", ("-.", "x"))
# Rows of results/paper/reference.csv whose split says the number is not checked are not drawn.
UNSTATED_SPLITS = ("", "unverified")

# The dodge: with n lines in a panel, line i is drawn at params × 10^((i - (n-1)/2) · step),
# the same factor at every size, so equal scores sit side by side instead of on top of each
# other; the ticks stay at the true counts. step = DODGE_FRACTION of the axis' span in decades
# (at least one decade), and at most MAX_DODGE_SHARE of the narrowest gap between two sizes
# shared among the lines, so the clusters of two sizes never meet.
DODGE_FRACTION = 0.02
MAX_DODGE_SHARE = 0.5
SCORE_LIMITS = (0.0, 100.0)  # the y axis never leaves them (scores are percentages)
MIN_SCORE_SPAN = 10.0  # a flat panel still reads as a score axis, not 51.9-52.1
# The paper's numbers are for T5.1.1 (and GPT-3); a point is comparable with them only if its
# size is one of small…xxl with at least T5_MIN_PARAMS parameters (T5.1.1 Small has 77M).
T5_MIN_PARAMS = 7e7
TOY_NOTE = "toy model, not T5"
SINGLE_SEED_NOTE = "1 seed: no spread"
LEGEND_FONTSIZE = 9


class ReferenceWarning(UserWarning):
    """Reference rows left out of a plot: their source is not stated, or the plotted models are
    not T5.1.1 sizes (a toy model beside T5-XXL and GPT-3 would read as a comparison)."""


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


def _lm_adapt_label(sizes: pd.Series) -> str:
    """Panel (c)'s LM-adapted line, named by the checkpoint its sizes load (held at each size's
    own by `panel_runs`): "LM Adaptation (100K)" for T5, "(500)" for the toy world's."""
    steps = sorted({model_lm_adapt_steps(size) for size in sizes.dropna().unique()})
    counts = "/".join(axis_label("lm_adapt_steps", n) for n in steps) or "100K"
    return f"LM Adaptation ({counts})"


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


def _size_label(size: Any, params: float) -> str:
    if isinstance(size, str) and size.lower() in SIZE_LABELS:
        return SIZE_LABELS[size.lower()]
    if isinstance(size, str) and size:
        return size
    return _count_label(params)


def _count_label(params: float) -> str:
    """A parameter count as the x tick reads it: 76961152 → "77M", 11135332352 → "11.1B"."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if params >= scale:
            return f"{params / scale:.3g}{suffix}"
    return f"{params:.3g}"


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


def non_t5_sizes(frame: pd.DataFrame) -> list[str]:
    """The sizes of a figure frame that are no T5.1.1 size: not one of small…xxl, or fewer than
    `T5_MIN_PARAMS` parameters (toy and tiny models). Empty: the paper's points may be drawn
    beside this frame's."""
    size = frame["size"].astype(str).str.lower()
    t5 = size.isin(list(T5_PARAMS)) & frame["params"].astype(float).ge(T5_MIN_PARAMS)
    return sorted(set(frame.loc[~t5, "size"].astype(str)))


@dataclass
class _Line:
    """One drawn series: its points (sorted by params) and how it looks."""

    label: str
    rows: pd.DataFrame  # params, size, mean, std (NaN: one seed), n_seeds if known
    color: str
    linestyle: str = "-"
    marker: str = "o"

    def single_seed(self) -> np.ndarray:
        single = self.rows["std"].isna()
        if "n_seeds" in self.rows.columns:
            single |= self.rows["n_seeds"].eq(1).fillna(False).astype(bool)
        return single.to_numpy(dtype=bool)


def _seed_note(line: _Line) -> str:
    """What the legend adds to a line with one seed somewhere: " (1 seed: no spread)", or
    " (1 seed at Base: no spread)" when only some sizes have one; "" otherwise."""
    single = line.single_seed()
    if not single.any():
        return ""
    if single.all():
        return f" ({SINGLE_SEED_NOTE})"
    rows = line.rows[single]
    at = dict.fromkeys(map(_size_label, rows["size"], rows["params"].astype(float)))
    return f" (1 seed at {', '.join(at)}: no spread)"


def _dodge_step(xs: Sequence[float], n_lines: int) -> float:
    """The dodge step in decades for `n_lines` lines over sizes `xs` (see `DODGE_FRACTION`)."""
    if n_lines < 2:
        return 0.0
    logs = np.log10(sorted(set(xs)))
    step = DODGE_FRACTION * max(float(logs[-1] - logs[0]), 1.0)
    if len(logs) > 1:
        step = min(step, MAX_DODGE_SHARE * float(np.diff(logs).min()) / (n_lines - 1))
    return step


def dodge_factors(n_lines: int, step: float) -> list[float]:
    """The x factor of each of `n_lines` lines, centred on 1: 10^((i - (n-1)/2) · step)."""
    return [10 ** ((i - (n_lines - 1) / 2) * step) for i in range(n_lines)]


def _score_limits(low: float, high: float) -> tuple[float, float]:
    """y limits around [low, high] with a margin, at least MIN_SCORE_SPAN tall, inside
    SCORE_LIMITS (a panel at 100 reads 90-100, not 95-105)."""
    floor, ceil = SCORE_LIMITS
    pad = max(0.08 * (high - low), 1.0)
    low, high = max(floor, low - pad), min(ceil, high + pad)
    if high - low < MIN_SCORE_SPAN:
        mid = (low + high) / 2
        low, high = mid - MIN_SCORE_SPAN / 2, mid + MIN_SCORE_SPAN / 2
        if low < floor:
            low, high = floor, floor + MIN_SCORE_SPAN
        if high > ceil:
            low, high = ceil - MIN_SCORE_SPAN, ceil
    return low, high


def _size_axis(ax: Axes, ticks: dict[float, str], half_cluster: float) -> None:
    """The log x axis: a tick at each parameter count (labelled with the count), the size
    names at the same positions on a top axis, room for the dodged clusters either side."""
    xs = sorted(ticks)
    logs = np.log10(xs)
    span = float(logs[-1] - logs[0])
    pad = 0.5 if span == 0 else 0.1 * span + half_cluster  # one size: a decade around it
    ax.set_xscale("log")
    ax.set_xlim(10 ** (logs[0] - pad), 10 ** (logs[-1] + pad))
    ax.set_xticks(xs, [_count_label(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    top = ax.secondary_xaxis("top")
    top.set_xticks(xs, [ticks[x] for x in xs])
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(axis="x", labelsize=LEGEND_FONTSIZE)


def _draw(
    ax: Axes,
    lines: list[_Line],
    reference: pd.DataFrame | None,
    *,
    legend_title: str | None,
    title: str,
    ylabel: str,
) -> None:
    """Draw `lines` (dodged, error bars + band) and the reference rows; set both axes, the
    title and the legend."""
    ticks: dict[float, str] = {}
    for line in lines:
        for s, p in zip(line.rows["size"], line.rows["params"], strict=True):
            ticks[float(p)] = _size_label(s, float(p))
    ref_ticks = {} if reference is None else _reference_ticks(reference)
    ticks = {**ref_ticks, **ticks}  # a size's own name wins over a reference's
    step = _dodge_step(list(ticks), len(lines))
    lows: list[float] = []
    highs: list[float] = []

    # the lines: a light band and error bars where there is a spread
    all_single = bool(lines) and all(line.single_seed().all() for line in lines)
    for line, factor in zip(lines, dodge_factors(len(lines), step), strict=True):
        x = line.rows["params"].astype(float).to_numpy() * factor
        mean = line.rows["mean"].astype(float).to_numpy()
        std = line.rows["std"].astype(float).to_numpy()  # NaN: one seed, nothing drawn
        spread = np.isfinite(std)
        label = line.label if all_single else line.label + _seed_note(line)
        if spread.any():
            ax.fill_between(
                x, mean - std, mean + std, where=spread, color=line.color, alpha=0.15, linewidth=0
            )
        container = ax.errorbar(
            x,
            mean,
            yerr=std,
            color=line.color,
            linestyle=line.linestyle,
            marker=line.marker,
            markersize=5,
            capsize=3,
            label=label,
        )
        container.lines[0].set_clip_on(False)  # a point at 0 or 100 shows whole at the edge
        lows += list(np.where(spread, mean - std, mean))
        highs += list(np.where(spread, mean + std, mean))

    # the paper's points, in black and never dodged
    if reference is not None:
        for i, row in enumerate(reference.itertuples(index=False)):
            ax.scatter(
                [float(row.params)],
                [float(row.superglue)],
                marker=_REFERENCE_MARKERS[i % len(_REFERENCE_MARKERS)],
                s=60,
                color="black",  # the paper's numbers stay apart from our coloured lines
                zorder=3,
                label=f"{row.method} ({row.model}, paper, {str(row.split).strip()})",
            )
            lows.append(float(row.superglue))
            highs.append(float(row.superglue))

    if ticks:
        _size_axis(ax, ticks, (len(lines) - 1) / 2 * step)
    if lows:
        ax.set_ylim(*_score_limits(float(np.nanmin(lows)), float(np.nanmax(highs))))
    ax.set_xlabel("Model Parameters")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if all_single:
        legend_title = f"{legend_title}\n({SINGLE_SEED_NOTE})" if legend_title else SINGLE_SEED_NOTE
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ours = [i for i, h in enumerate(handles) if isinstance(h, ErrorbarContainer)]
        order = ours + [i for i in range(len(handles)) if i not in ours]  # our lines first
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            title=legend_title,
            alignment="left",
            fontsize=LEGEND_FONTSIZE,
            title_fontsize=LEGEND_FONTSIZE,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),  # outside the axes: the legend covers no point
            borderaxespad=0.0,
            frameon=False,
        )


def _references_for(frame: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame | None:
    """The reference rows to draw beside `frame`'s points: none unless every point is a T5.1.1
    size (`non_t5_sizes`, else a `ReferenceWarning` says why), and of those only the rows
    whose source is stated (`stated_reference`)."""
    if reference is None:
        return None
    others = non_t5_sizes(frame)
    if others:
        warnings.warn(
            f"the paper's reference points (T5-XXL, GPT-3) are left out: size(s) {others} are "
            f"no T5.1.1 size (small…xxl, >= {T5_MIN_PARAMS:.0e} parameters), and the paper's "
            "scores beside a toy model's would read as a comparison",
            ReferenceWarning,
            stacklevel=3,
        )
        return None
    return stated_reference(reference)


def _toy_title(title: str, frame: pd.DataFrame) -> str:
    return f"{title}\n({TOY_NOTE})" if non_t5_sizes(frame) else title


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
        frame: `superglue_frame(runs, axis)` (columns size, params, <axis>, mean, std; n_seeds
            if present marks single-seed points).
        axis: `prompt_len`, `init`, `objective`, `lm_adapt_steps` (or any column of `frame`).
            For `lm_adapt_steps`, a frame with `lm_adapt_source` draws one line per step count
            and recipe, labelled e.g. "100K (released)", "10K (own)", "0K (none: T5.1.1)",
            the recipe also in the line style (released solid, own dashed, none dotted).
        ax: draw into this axes (e.g. one cell of a grid); default a new figure.
        title: default the paper's panel caption, e.g. "(a) Prompt length" (+ "toy model, not
            T5" for a frame of other sizes).
        reference: optional reference points (`results/paper/reference.csv` layout); drawn only
            beside T5.1.1 sizes and only rows with a stated source (`_references_for`).
        ylabel: y-axis label; say which tasks were averaged when they are not SuperGLUE's.

    Returns:
        The figure holding `ax`.
    """
    _check_frame(frame, ["size", "params", axis, "mean", "std"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.9))
    fig = ax.figure
    drawn = frame[frame["mean"].notna()]
    by_source = axis == "lm_adapt_steps" and "lm_adapt_source" in drawn.columns
    lines = []
    for i, value in enumerate(_axis_order(axis, list(drawn[axis].dropna().unique()))):
        rows = drawn[drawn[axis] == value]
        for source in _source_order(rows["lm_adapt_source"]) if by_source else [None]:
            line = rows if not by_source else rows[_same_source(rows["lm_adapt_source"], source)]
            label, (linestyle, marker) = axis_label(axis, value), ("-", "o")
            if axis == "objective" and value == "lm_adapt":
                label = _lm_adapt_label(line["size"])
            if by_source:
                name, (linestyle, marker) = _source_legend(source)
                label = f"{label} ({name})"
            lines.append(_Line(label, line.sort_values("params"), f"C{i % 10}", linestyle, marker))
    legend_title = LEGEND_TITLES.get(axis, axis)
    if by_source:
        legend_title += " (recipe)"
    _draw(
        ax,
        lines,
        _references_for(drawn, reference),
        legend_title=legend_title,
        title=title if title is not None else _toy_title(PANEL_TITLES.get(axis, axis), drawn),
        ylabel=ylabel,
    )
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
            stacklevel=4,
        )
    return reference[stated]


def _reference_ticks(reference: pd.DataFrame) -> dict[float, str]:
    """Extra x ticks of the reference points: T5 sizes by name ("XXL"), others by model name
    ("GPT-3 175B")."""
    ticks: dict[float, str] = {}
    for row in reference.itertuples(index=False):
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
    """Figure 1: a line per method (mean ± std over seeds) vs T5 size, with the paper's points.

    The lines are the paper's: "Model Tuning", "Model Tuning (Multi-task)", "Prompt Tuning"
    (`repro.methods.METHODS` labels; a frame without a `method` column is prompt tuning). A
    frame of other sizes (toy, tiny: `non_t5_sizes`) is drawn without the paper's points, with
    a `ReferenceWarning`, and labelled "toy model, not T5" in its legend and title.

    Args:
        frame: `superglue_frame(figure1_runs(runs), "method")`: one row per method and size.
        reference: `results/paper/reference.csv` (GPT-3 prompt design, T5-XXL model tuning and
            prompt tuning as the paper reports them).
    """
    _check_frame(frame, ["size", "params", "mean", "std"])
    if "method" not in frame.columns:
        frame = frame.assign(method=DEFAULT_METHOD)
    frame = frame.assign(method=frame["method"].fillna(DEFAULT_METHOD))
    if frame[["method", "params"]].duplicated().any():
        raise ValueError(
            "Figure 1 needs one point per size (and method), but some have several rows; build the "
            'frame with superglue_frame(figure1_runs(runs), "method")'
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 4.2))
    fig = ax.figure
    drawn = frame[frame["mean"].notna()].sort_values("params")
    toy = bool(non_t5_sizes(drawn))
    order = [m for m in METHOD_COLORS if m in set(drawn["method"])]
    order += sorted(set(drawn["method"]) - set(order))  # a method added later (e.g. LoRA)
    lines = []
    for i, method in enumerate(order):
        name = METHODS[method].label if method in METHODS else method
        label = f"{name} ({TOY_NOTE})" if toy else f"{name} (ours)"
        color = METHOD_COLORS.get(method, f"C{(i + 4) % 10}")
        lines.append(_Line(label, drawn[drawn["method"] == method], color))
    only_prompt = order in ([], [DEFAULT_METHOD])
    title = (
        "Figure 1: prompt tuning vs model size" if only_prompt else "Figure 1: tuning vs model size"
    )
    _draw(
        ax,
        lines,
        _references_for(drawn, reference),
        legend_title="Method",
        title=_toy_title(title, drawn),
        ylabel=ylabel,
    )
    return fig


def plot_grid(
    frames: Mapping[str, pd.DataFrame],
    *,
    ylabel: str = "SuperGLUE Score",
    reference: pd.DataFrame | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Figure 3 as one figure: a panel per `{axis: superglue frame}`, in the given order.

    Exactly one axes per panel: 1-3 panels side by side, 4 as the paper's 2x2 grid.
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
    for cell, (axis, frame) in zip(cells, frames.items(), strict=False):
        plot_panel(frame, axis, ax=cell, reference=reference, ylabel=ylabel)
    if suptitle:
        fig.suptitle(suptitle)
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

    fig = plot_grid(frames, ylabel=_score_label(tasks), reference=reference)
    written["figure3"] = save_figure(fig, out_dir, "figure3")
    plt.close(fig)
    return written


def figure1_frame(frame_runs: pd.DataFrame, tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Figure 1's points: per method and size, the mean ± std over seeds of the task mean."""
    runs = figure1_runs(frame_runs)
    if "method" not in runs.columns:
        return superglue_frame(runs, None, tasks=tasks)
    return superglue_frame(runs, "method", tasks=tasks)


def figure1(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    reference: pd.DataFrame,
    *,
    tasks: Sequence[str] | None = None,
) -> list[Path]:
    """Figure 1 from a run frame: a line per method (`figure1_runs`: prompt tuning at the
    paper's default setting, model tuning and multi-task model tuning) vs size; writes PNG+PDF.

    Raises:
        ValueError: no size has a point to draw (`no_points_reason` says why).
    """
    frame = figure1_frame(frame_runs, tasks)
    if not frame["mean"].notna().any():
        raise ValueError(no_points_reason(frame_runs, tasks))
    fig = plot_figure1(frame, reference, ylabel=_score_label(tasks))
    paths = save_figure(fig, out_dir, "figure1")
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options (`python -m repro.plots --help`); every option says what it does."""
    parser = argparse.ArgumentParser(prog="python -m repro.plots", description=main.__doc__)
    parser.add_argument("frame", help="a run frame written by python -m repro.collect")
    parser.add_argument(
        "-o",
        "--out-dir",
        default="results/figures",
        help="where every figure goes, as PNG and PDF (default %(default)s)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        help="tasks averaged per point (default: SuperGLUE's 8; a toy or smoke frame names its "
        "own, e.g. --tasks toy_review toy_fact)",
    )
    parser.add_argument(
        "--figure1",
        action="store_true",
        help="also draw Figure 1 (a line per method vs size: prompt tuning at the paper's "
        "default setting, model tuning, multi-task model tuning)",
    )
    parser.add_argument(
        "--reference",
        default="results/paper/reference.csv",
        help="the paper's reported points drawn on Figure 1 (default %(default)s; see "
        "results/paper/README.md); drawn only beside T5.1.1 sizes, never beside toy models",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m repro.plots results/<name>.csv -o results/figures [--tasks t1 t2] [--figure1]`."""
    from repro.cli import first_line
    from repro.collect import load_frame

    args = build_parser().parse_args(argv)
    try:
        runs = load_frame(args.frame)
    except (OSError, ValueError) as err:
        print(f"error: cannot read the run frame {args.frame}: {first_line(err)}", file=sys.stderr)
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
