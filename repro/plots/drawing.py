"""The drawing every figure shares: lines of mean ± std over seeds against model size (log x
axis ticked at each size's parameter count, the dodge, the legend outside the axes), or against
an axis' values when a frame holds one size (`draw_values`); the score axis (ticks inside
[0, 100], the frame a little beyond so no marker is cut, one range across a composite), the
seed note under the axes, the y label, why a frame gives no point, and the PNG + PDF files.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from repro.collect.superglue import SUPERGLUE_TASKS
from repro.plots.reference import non_t5_sizes

SIZE_LABELS = {"small": "Small", "base": "Base", "large": "Large", "xl": "XL", "xxl": "XXL"}
_REFERENCE_MARKERS = ("*", "D", "s", "^", "v", "P")

# The dodge: with n lines in a panel, line i is drawn at params × 10^((i - (n-1)/2) · step),
# the same factor at every size, so equal scores sit side by side instead of on top of each
# other; the ticks stay at the true counts. step = DODGE_FRACTION of the axis' span in decades
# (at least one decade), and at most MAX_DODGE_SHARE of the narrowest gap between two sizes
# shared among the lines, so the clusters of two sizes never meet.
DODGE_FRACTION = 0.02
MAX_DODGE_SHARE = 0.5
SCORE_LIMITS = (0.0, 100.0)  # the y ticks never leave them (scores are percentages)
MIN_SCORE_SPAN = 10.0  # a flat panel still reads as a score axis, not 51.9-52.1
# The frame sits this share of the ticked range beyond it on either side, so that a marker at
# 0 or 100 (or at the panel's lowest/highest point) shows whole inside the frame, never cut.
FRAME_MARGIN = 0.05
SINGLE_SEED_NOTE = "1 seed: no spread"
LEGEND_FONTSIZE = 9
NOTE_FONTSIZE = 8
NOTE_WIDTH = 95  # characters per line of the note under an axes


def size_label(size: Any, params: float) -> str:
    """A size as the top axis and the notes name it: "Base", "toy_xl", else its count."""
    if isinstance(size, str) and size.lower() in SIZE_LABELS:
        return SIZE_LABELS[size.lower()]
    if isinstance(size, str) and size:
        return size
    return count_label(params)


def count_label(params: float) -> str:
    """A parameter count as the x tick reads it: 76961152 → "77M", 11135332352 → "11.1B"."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if params >= scale:
            return f"{params / scale:.3g}{suffix}"
    return f"{params:.3g}"


def check_frame(frame: pd.DataFrame, needed: Sequence[str]) -> None:
    """Refuse a figure frame without the columns `needed` or without a parameter count."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise KeyError(
            f"frame lacks columns {missing} (have {list(frame.columns)}); "
            "pass the output of repro.collect.superglue_frame"
        )
    if frame["params"].isna().any():
        sizes = sorted(map(str, frame.loc[frame["params"].isna(), "size"].unique()))
        raise ValueError(f"no parameter count for size(s) {sizes}: the x axis needs `params`")


@dataclass
class Line:
    """One drawn series: its points (sorted by params) and how it looks."""

    label: str
    rows: pd.DataFrame  # params, size, mean, std (NaN: one seed), n_seeds if known;
    # `draw_values` also reads x (the point's position) and point (its name)
    color: str
    linestyle: str = "-"
    marker: str = "o"

    def single_seed(self) -> np.ndarray:
        single = self.rows["std"].isna()
        if "n_seeds" in self.rows.columns:
            single |= self.rows["n_seeds"].eq(1).fillna(False).astype(bool)
        return single.to_numpy(dtype=bool)

    def points_named(self, *, single: bool = False) -> str:
        """The line's points by name (its `point` column, else their sizes: "Base, Large"),
        only the single-seed ones if `single`."""
        rows = self.rows[self.single_seed()] if single else self.rows
        if "point" in rows.columns:
            names = map(str, rows["point"])
        else:
            names = map(size_label, rows["size"], rows["params"].astype(float))
        return ", ".join(dict.fromkeys(names))


def seed_note(lines: Sequence[Line]) -> str:
    """What the note under an axes says of the seeds behind `lines`' points: "mean ± std over 3
    seeds", "1 seed: no spread", or, with mixed counts, where one seed leaves no spread
    ("mean ± std over 3 seeds; 1 seed, no spread: 1 at Base, Large; 5 at XL"). Kept out of the
    legend: there it widened every entry and squeezed the panel to a fraction of its width."""
    lines = [line for line in lines if len(line.rows)]
    if not lines:
        return ""
    if all(line.single_seed().all() for line in lines):
        return SINGLE_SEED_NOTE
    rows = pd.concat([line.rows[~line.single_seed()] for line in lines])
    counts = sorted({int(n) for n in rows.get("n_seeds", pd.Series()).dropna()})
    over = "seeds"  # an older frame without n_seeds
    if counts:
        over = f"{counts[0]}-{counts[-1]} seeds" if len(counts) > 1 else f"{counts[0]} seeds"
    note = f"mean ± std over {over}"
    singles = [line for line in lines if line.single_seed().any()]
    if singles:
        where = [
            f"{line.label} at {line.points_named(single=True)}"
            if line.label
            else f"at {line.points_named(single=True)}"
            for line in singles
        ]
        note += f"; 1 seed, no spread: {'; '.join(where)}"
    return note


def add_note(ax: Axes, note: str) -> None:
    """`note` in small grey type under `ax`'s x label, left-aligned with the axes (out of the
    legend, so it neither widens the legend nor covers a point)."""
    if not note:
        return
    ax.annotate(
        textwrap.fill(note, NOTE_WIDTH),
        xy=(0.0, 0.0),
        xycoords=("axes fraction", ax.xaxis.label),  # x: the axes' left; y: the label's bottom
        xytext=(0.0, -4.0),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=NOTE_FONTSIZE,
        color="0.35",
    )


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


def set_score_axis(ax: Axes, low: float, high: float) -> None:
    """The y axis of scores from `low` to `high`: ticks inside `_score_limits` around them
    (so never beyond [0, 100]) and the frame `FRAME_MARGIN` beyond those, so no marker is cut."""
    _score_frame(ax, *_score_limits(low, high))


def _score_frame(ax: Axes, low: float, high: float) -> None:
    """Ticks from `low` to `high`, the frame `FRAME_MARGIN` of that range beyond either end."""
    margin = FRAME_MARGIN * (high - low)
    ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
    ax.set_yticks([t for t in ticks if low - 1e-9 <= t <= high + 1e-9])
    ax.set_ylim(low - margin, high + margin)


def _scores_shown(ax: Axes) -> tuple[float, float]:
    """The score range an axes set by `_score_frame` shows, its frame margin taken off."""
    low, high = ax.get_ylim()
    inner = (high - low) / (1 + 2 * FRAME_MARGIN)
    return low + FRAME_MARGIN * inner, high - FRAME_MARGIN * inner


def share_score_axis(axes: Iterable[Axes]) -> None:
    """One score range for all `axes` (the panels of a composite), so that one score sits at
    the same height in each: the union of their ranges, ticks and frame as `_score_frame`."""
    axes = list(axes)
    if not axes:
        return
    shown = [_scores_shown(ax) for ax in axes]
    low, high = min(lo for lo, _ in shown), max(hi for _, hi in shown)
    for ax in axes:
        _score_frame(ax, low, high)


def _size_axis(ax: Axes, ticks: dict[float, str], half_cluster: float) -> None:
    """The log x axis: a tick at each parameter count (labelled with the count), the size
    names at the same positions on a top axis, room for the dodged clusters either side."""
    xs = sorted(ticks)
    logs = np.log10(xs)
    span = float(logs[-1] - logs[0])
    pad = 0.5 if span == 0 else 0.1 * span + half_cluster  # one size: a decade around it
    ax.set_xscale("log")
    ax.set_xlim(10 ** (logs[0] - pad), 10 ** (logs[-1] + pad))
    ax.set_xticks(xs, [count_label(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    top = ax.secondary_xaxis("top")
    top.set_xticks(xs, [ticks[x] for x in xs])
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(axis="x", labelsize=LEGEND_FONTSIZE)


def draw(
    ax: Axes,
    lines: list[Line],
    reference: pd.DataFrame | None,
    *,
    legend_title: str | None,
    title: str,
    ylabel: str,
) -> None:
    """Draw `lines` against model size (dodged, error bars + band) and the reference rows; set
    both axes, the title, the legend and the seed note under the axes."""
    ticks: dict[float, str] = {}
    for line in lines:
        for s, p in zip(line.rows["size"], line.rows["params"], strict=True):
            ticks[float(p)] = size_label(s, float(p))
    ref_ticks = {} if reference is None else _reference_ticks(reference)
    ticks = {**ref_ticks, **ticks}  # a size's own name wins over a reference's
    step = _dodge_step(list(ticks), len(lines))
    scores: list[float] = []
    for line, factor in zip(lines, dodge_factors(len(lines), step), strict=True):
        x = line.rows["params"].astype(float).to_numpy() * factor
        scores += _draw_line(ax, line, x, line.linestyle)

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
            scores.append(float(row.superglue))

    if ticks:
        _size_axis(ax, ticks, (len(lines) - 1) / 2 * step)
    _finish(ax, lines, scores, "Model Parameters", ylabel, title, legend_title)


def draw_values(
    ax: Axes,
    lines: list[Line],
    ticks: Sequence[str],
    *,
    connect: bool,
    xlabel: str,
    title: str,
    ylabel: str,
    legend_title: str | None = None,
) -> None:
    """Draw `lines` against an axis' values (a panel of one model size): the value of row
    `x` at position x, ticked with `ticks[x]`, evenly spaced (as the paper's sweep values
    1, 5, 20, 100, 150 are near-geometric, a log axis would press 100 and 150 together). The
    points of a line are joined if `connect` (an ordered axis: prompt length, steps), else
    shown as separate markers (initialisations, objectives). Several lines are dodged by a
    tenth of a position each; a legend only when there are several."""
    scores: list[float] = []
    for i, line in enumerate(lines):
        dodge = (i - (len(lines) - 1) / 2) * 0.1
        x = line.rows["x"].astype(float).to_numpy() + dodge
        scores += _draw_line(ax, line, x, line.linestyle if connect else "none")
    ax.set_xticks(range(len(ticks)), [textwrap.fill(t, 14) for t in ticks])
    ax.set_xlim(-0.5, len(ticks) - 0.5)
    _finish(ax, lines, scores, xlabel, ylabel, title, legend_title if len(lines) > 1 else None)


def _draw_line(ax: Axes, line: Line, x: np.ndarray, linestyle: str) -> list[float]:
    """One line at `x`: mean with error bars, a light band where there is a spread (none for a
    single seed, nor between unjoined points); returns the scores the y axis must show (mean ±
    std, or the mean)."""
    mean = line.rows["mean"].astype(float).to_numpy()
    std = line.rows["std"].astype(float).to_numpy()  # NaN: one seed, nothing drawn
    spread = np.isfinite(std)
    if spread.any() and linestyle != "none":
        ax.fill_between(
            x, mean - std, mean + std, where=spread, color=line.color, alpha=0.15, linewidth=0
        )
    container = ax.errorbar(
        x,
        mean,
        yerr=std,
        color=line.color,
        linestyle=linestyle,
        marker=line.marker,
        markersize=5,
        capsize=3,
        label=line.label,
    )
    container.lines[0].set_clip_on(False)  # the frame's margin has room; never cut a marker
    return [*np.where(spread, mean - std, mean), *np.where(spread, mean + std, mean)]


def _finish(
    ax: Axes,
    lines: list[Line],
    scores: list[float],
    xlabel: str,
    ylabel: str,
    title: str,
    legend_title: str | None,
) -> None:
    """The score axis, labels, title, grid, the seed note under the axes and the legend
    (outside the axes: it covers no point; our lines first, then the paper's points)."""
    if scores and np.isfinite(scores).any():
        set_score_axis(ax, float(np.nanmin(scores)), float(np.nanmax(scores)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    add_note(ax, seed_note(lines))
    handles, labels = ax.get_legend_handles_labels()
    if legend_title is None and all(isinstance(h, ErrorbarContainer) for h in handles):
        return  # one unnamed line: its ticks say what it is
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


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write `<out_dir>/<name>.png` and `.pdf`, each aside then renamed (a reader never sees
    half a figure); returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in FIGURE_FORMATS]
    for path in paths:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fig.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return paths


FIGURE_FORMATS = ("png", "pdf")  # every figure is written in each


def score_label(tasks: Sequence[str] | None) -> str:
    """SuperGLUE's name only for SuperGLUE's 8 tasks; smoke/toy runs say what they average."""
    if tasks is None or tuple(tasks) == SUPERGLUE_TASKS:
        return "SuperGLUE Score"
    if len(tasks) == 1:
        return f"Score ({tasks[0]})"
    return f"Mean score ({', '.join(tasks)})"


def frame_score_label(frame: pd.DataFrame) -> str:
    """The y label of a figure frame drawn without one: `score_label` of the tasks it averages
    where it records them (`frame.attrs["tasks"]`); else "SuperGLUE Score" only for T5.1.1
    sizes, where `superglue_frame`'s default is SuperGLUE, and "Score" for a toy or tiny model's
    frame, whose tasks are not SuperGLUE's."""
    if frame.attrs.get("tasks"):
        return score_label(frame.attrs["tasks"])
    return "Score" if non_t5_sizes(frame) else "SuperGLUE Score"


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
