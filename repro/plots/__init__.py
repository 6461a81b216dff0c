"""The paper's figures redrawn from our runs: Figure 3 (a)-(d) panels and Figure 1.

Every panel reads a SuperGLUE frame (`repro.collect.superglue.superglue_frame`) and is drawn the
way the paper's are, with what a reader needs to trust it:

- x = frozen model parameters on a log axis, one tick at each size's parameter count (labelled
  with the count, e.g. "77M", "11.1B"); the size names ("Small" … "XXL") sit at the same
  positions on a top axis. A Figure 3 panel of one size is drawn against its axis' values
  instead (x = prompt length 1 … 150, one line through the means): with one size tick there
  would be nothing to join, only dots dodged sideways.
- y = the score, ticked inside [0, 100] (a saturated panel reads 90-100, never 95-105), at least
  10 points tall, the frame a little beyond the ticks so that no marker is cut; the panels of a
  composite share one range. The label says "SuperGLUE Score" only for SuperGLUE (T5.1.1 sizes
  when the tasks are not given), else which tasks it averages, or "Score".
- one line per axis value with the paper's legend label; the legend (outside the axes, so it
  covers no point) has a title naming the axis, e.g. "Prompt length".
- mean ± std over seeds: error bars and a light band. A note under the axes says over how many
  seeds, and where a point has one seed and so no spread ("1 seed: no spread"), rather than
  drawing nothing silently; it stays out of the legend, which it would widen.
- series never hide each other: at each size the lines are spread around the tick by a small
  fixed factor (the "dodge", `DODGE_FRACTION`), the same for every point of a line.
- the paper's reference points (`results/paper/reference.csv`: T5-XXL, GPT-3) are drawn only
  next to T5.1.1 sizes (`non_t5_sizes`): beside a toy or tiny model they would read as a
  comparison, so they are left out with a `ReferenceWarning`, and the title says "toy model,
  not T5" (once: not in each legend entry, and once for a composite of toy panels); a toy
  frame's legend holds no T5 names either. Points whose `mean` is NA (no seed with all tasks
  finished) are not drawn.
- the backbone family (the run frame's `family`: `t5`, or `causal` for decoder-only LMs) is the
  first axis: two families' scores are never averaged nor joined by a line. A frame of several
  families is drawn once per family, each file named `<name>_<family>`
  (`figure3a_prompt_len_t5.png`, `figure3a_prompt_len_causal.png`, `figure3_causal.pdf`,
  `figure1_causal.png`); a frame of one family keeps the plain names and, for T5, the paper's
  titles. A causal figure says "decoder-only (causal) backbones" under its title, its panel (d)
  counts "Pre-training steps" (Pythia's step<N> checkpoints) and its panel (c) compares
  `next_token` (as pre-trained) with `instruct` (`repro.plots.family`).

    runs = collect_runs(["multirun/fig3a"])
    fig = plot_panel(superglue_frame(panel_runs(runs, "prompt_len"), "prompt_len"), "prompt_len")
    save_figure(fig, "results/figures", "figure3a_prompt_len")  # .png and .pdf

The rooms: `repro.plots.drawing` (the drawing every figure shares, and saving),
`repro.plots.reference` (the paper's points and when they may be drawn), `repro.plots.family`
(the backbone family in names and titles), one per figure family:
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
from repro.plots.drawing import dodge_factors, no_points_reason, save_figure, share_score_axis
from repro.plots.reference import (
    ReferenceWarning,
    load_reference,
    non_t5_sizes,
    stated_reference,
)
from repro.plots.scale import (
    METHOD_COLORS,
    figure1,
    figure1_by_family,
    figure1_frame,
    plot_figure1,
)

__all__ = [
    "AXIS_LABELS",
    "LEGEND_TITLES",
    "METHOD_COLORS",
    "PANEL_TITLES",
    "ReferenceWarning",
    "axis_label",
    "dodge_factors",
    "figure1",
    "figure1_by_family",
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
    "share_score_axis",
    "stated_reference",
]
