"""The drawing every figure shares: lines of mean ± std over seeds against model size (log x
axis ticked at each size's parameter count, the dodge, y limits inside [0, 100], the legend
outside the axes), the y label, why a frame gives no point, and the PNG + PDF files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from repro.collect.superglue import SUPERGLUE_TASKS

SIZE_LABELS = {"small": "Small", "base": "Base", "large": "Large", "xl": "XL", "xxl": "XXL"}
_REFERENCE_MARKERS = ("*", "D", "s", "^", "v", "P")

# The dodge: with n lines in a panel, line i is drawn at params × 10^((i - (n-1)/2) · step),
# the same factor at every size, so equal scores sit side by side instead of on top of each
# other; the ticks stay at the true counts. step = DODGE_FRACTION of the axis' span in decades
# (at least one decade), and at most MAX_DODGE_SHARE of the narrowest gap between two sizes
# shared among the lines, so the clusters of two sizes never meet.
DODGE_FRACTION = 0.02
MAX_DODGE_SHARE = 0.5
SCORE_LIMITS = (0.0, 100.0)  # the y axis never leaves them (scores are percentages)
MIN_SCORE_SPAN = 10.0  # a flat panel still reads as a score axis, not 51.9-52.1
SINGLE_SEED_NOTE = "1 seed: no spread"
LEGEND_FONTSIZE = 9


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
    rows: pd.DataFrame  # params, size, mean, std (NaN: one seed), n_seeds if known
    color: str
    linestyle: str = "-"
    marker: str = "o"

    def single_seed(self) -> np.ndarray:
        single = self.rows["std"].isna()
        if "n_seeds" in self.rows.columns:
            single |= self.rows["n_seeds"].eq(1).fillna(False).astype(bool)
        return single.to_numpy(dtype=bool)


def _seed_note(line: Line) -> str:
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


def draw(
    ax: Axes,
    lines: list[Line],
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
    return f"Mean score ({', '.join(tasks)})"


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
