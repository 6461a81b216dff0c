"""The paper's figures redrawn from our runs: Figure 3 (a)-(d) panels and Figure 1.

Every panel reads a SuperGLUE frame (`repro.collect.superglue.superglue_frame`) and is drawn the
way the paper's are, with what a reader needs to trust it:

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

The rooms: `repro.plots.drawing` (the drawing every figure shares, and saving),
`repro.plots.reference` (the paper's points and when they may be drawn), one per figure family:
`repro.plots.ablations` (Figure 3's panels) and `repro.plots.scale` (Figure 1: methods vs model
size), and `repro.plots.cli` (`python -m repro.plots`). The names below are the public API the
notebooks and docs use.
"""

import matplotlib

matplotlib.use("Agg")  # files only, never a display (CI, clusters, notebooks run headless)

from repro.plots.ablations import (
    AXIS_LABELS,
    LEGEND_TITLES,
    PANEL_TITLES,
    axis_label,
    figure3,
    plot_grid,
    plot_panel,
    present_panels,
)
from repro.plots.drawing import dodge_factors, no_points_reason, save_figure
from repro.plots.reference import (
    ReferenceWarning,
    load_reference,
    non_t5_sizes,
    stated_reference,
)
from repro.plots.scale import METHOD_COLORS, figure1, figure1_frame, plot_figure1

__all__ = [
    "AXIS_LABELS",
    "LEGEND_TITLES",
    "METHOD_COLORS",
    "PANEL_TITLES",
    "ReferenceWarning",
    "axis_label",
    "dodge_factors",
    "figure1",
    "figure1_frame",
    "figure3",
    "load_reference",
    "no_points_reason",
    "non_t5_sizes",
    "plot_figure1",
    "plot_grid",
    "plot_panel",
    "present_panels",
    "save_figure",
    "stated_reference",
]
