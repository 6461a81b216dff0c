"""The frame read from a W&B project: one row per run (per task of a multi-task job).

**The W&B contract** (what the W&B logger writes and `collect_wandb` reads):

- `run.config` holds the resolved run config. Axes are read from it the same way as from a run
  dir's `config.yaml` (top-level keys, or the `name`/`size`/`params` of a config group).
- `run.summary` holds the fields of result.json under the same keys (`status`, `error`, the axes,
  `best_step`, `metrics` as a nested dict, `score`, `wall_s`, ...). Summary axes win over config
  axes, as result.json does locally. Flat `metrics/<name>` summary keys are accepted too.
- A W&B run whose summary has no `status` gets one from `run.state`: `running` → running,
  `failed`/`crashed` → failed, anything else (finished without a logged result, killed) →
  incomplete.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

from repro.collect.frame import (
    CollectWarning,
    axes_from_config,
    is_missing,
    row_from_result,
    to_frame,
)


def collect_wandb(project: str, group: str | None = None, api: Any = None) -> pd.DataFrame:
    """The results frame built from a W&B project (`entity/project`), optionally one group.

    Args:
        project: `entity/project` path passed to `wandb.Api().runs`.
        group: keep only runs of this W&B group (one group per sweep).
        api: an object with `runs(path, filters=...)` (default `wandb.Api()`); tests pass a fake
            whose runs have `.config`, `.summary`, `.id`, `.path`, `.state`, `.group`.
    """
    if api is None:
        import wandb  # imported here so that local collection never needs W&B

        api = wandb.Api()
    filters = {"group": group} if group else {}
    rows = []
    for run in api.runs(project, filters=filters):
        if group and getattr(run, "group", group) != group:
            continue
        rows.extend(_rows_from_wandb_run(run))
    return to_frame(rows)


_WANDB_STATE_TO_STATUS = {"running": "running", "failed": "failed", "crashed": "failed"}


def _rows_from_wandb_run(run: Any) -> list[dict[str, Any]]:
    """One row per task: a multi-task job (task=superglue) logs each task's result under
    `results/<task>` of its summary, as the local frame has one row per `<run_dir>/<task>/`."""
    summary = _plain(run.summary) or {}
    results = summary.get("results") if isinstance(summary, Mapping) else None
    if not isinstance(results, Mapping) or not results:
        return [_row_from_wandb_run(run, summary)]
    return [_row_from_wandb_run(run, result, task=task) for task, result in results.items()]


def _row_from_wandb_run(run: Any, summary: Any, task: str | None = None) -> dict[str, Any]:
    """The row of one result logged as (part of) a W&B run's summary; `task` names the part."""
    path = run.path if isinstance(run.path, str) else "/".join(map(str, run.path))
    path += f"/{task}" if task else ""
    config = _plain(run.config) or {}
    try:
        row = row_from_result(summary)
    except ValueError as e:
        warnings.warn(
            f"W&B run {path}: unreadable summary ({e}); kept as status 'corrupt'",
            CollectWarning,
            stacklevel=3,
        )
        row = {"status": "corrupt", "error": f"corrupt summary: {e}"}
    if task and is_missing(row.get("task")):
        row["task"] = task
    for axis, value in axes_from_config(config).items():
        if is_missing(row.get(axis)):
            row[axis] = value
    if is_missing(row.get("status")):
        row["status"] = _WANDB_STATE_TO_STATUS.get(getattr(run, "state", None), "incomplete")
    row["run_dir"] = path
    row["wandb_id"] = run.id
    return row


def _plain(obj: Any) -> Any:
    """W&B summary/config objects (and their nested sub-dicts) → plain dicts."""
    if hasattr(obj, "_json_dict"):  # wandb's Summary keeps its raw values here
        obj = obj._json_dict
    if isinstance(obj, Mapping) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")):
        return {k: _plain(obj[k]) for k in obj.keys()}  # noqa: SIM118 (not every Mapping-like iterates)
    return obj
