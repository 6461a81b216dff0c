"""Collect runs into one pandas frame: one row per run, from run directories or from W&B.

The rooms, in the order a frame is made and read:

- `repro.collect.frame`: the frame's columns (`AXES`, ...), how one run's record becomes a row,
  and the frame on disk (`load_frame`, `write_frame`);
- `repro.collect.rundirs`: `collect_runs`, the frame read from run directories;
- `repro.collect.wandb_runs`: `collect_wandb`, the frame read from a W&B project (its contract),
  and `collect_wandb_offline`, the same frame read from offline W&B runs' files;
- `repro.collect.superglue`: figure points, the runs of one panel (`panel_runs`,
  `figure1_runs`) and their SuperGLUE score per point (`superglue_scores`, `superglue_frame`);
- `repro.collect.cli`: `python -m repro.collect <dirs...> -o results/<name>.csv [--wandb
  entity/project --group G] [--wandb-offline <sweep dir>]`.

The names below are the public API the notebooks and docs use (`from repro.collect import
load_frame, panel_runs, superglue_frame`).
"""

from repro.collect.frame import (
    AXES,
    METRIC_PREFIX,
    PROMPT_AXES,
    STATUSES,
    T5_PARAMS,
    CollectWarning,
    load_frame,
    write_frame,
)
from repro.collect.rundirs import collect_runs
from repro.collect.superglue import (
    ABLATION_AXES,
    MODEL_LM_ADAPT_STEPS,
    PAPER_DEFAULTS,
    PAPER_LM_ADAPT_SOURCE,
    SUPERGLUE_TASKS,
    figure1_runs,
    panel_runs,
    span_corruption_as_step_zero,
    superglue_frame,
    superglue_scores,
)
from repro.collect.wandb_runs import collect_wandb, collect_wandb_offline

__all__ = [
    "ABLATION_AXES",
    "AXES",
    "METRIC_PREFIX",
    "MODEL_LM_ADAPT_STEPS",
    "PAPER_DEFAULTS",
    "PAPER_LM_ADAPT_SOURCE",
    "PROMPT_AXES",
    "STATUSES",
    "SUPERGLUE_TASKS",
    "T5_PARAMS",
    "CollectWarning",
    "collect_runs",
    "collect_wandb",
    "collect_wandb_offline",
    "figure1_runs",
    "load_frame",
    "panel_runs",
    "span_corruption_as_step_zero",
    "superglue_frame",
    "superglue_scores",
    "write_frame",
]
