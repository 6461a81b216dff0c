"""The results frame: its columns, how one run's record becomes a row, and the frame on disk.

Both readers (`repro.collect.rundirs.collect_runs`, `repro.collect.wandb_runs.collect_wandb`)
turn each run into a row with `row_from_result` and `axes_from_config`, then into the frame
with `to_frame`. The **results frame** has these columns, in this order:

- the axes: `family`, `size`, `params`, `method`, `objective`, `lm_adapt_steps`,
  `lm_adapt_source`, `prompt_len`, `init`, `task`, `seed` (missing ones are NA, never an
  error). `family` is the backbone's, `t5` or `causal` (read from its checkpoint,
  `repro.family`); a run that did not record it (a result.json from before decoder-only
  backbones, or an unfinished run whose config left `model.family` unset) is `t5`. `method` is what
  the run trained (`repro.methods`: `prompt`, `model`, `model_multitask`, `lora`; a run from before the
  axis is `prompt`); `prompt_len` and `init` are NA for a method without a prompt. `lm_adapt_source` is the recipe
  of the backbone: `released` (Google's `google/t5-<size>-lm-adapt`), `own` (the suite's
  `repro.lm_adapt`) or `none` (no LM adaptation); a run that did not record it (result.json
  from before the key) gets `none` if its axes say no LM adaptation, else it is read from the
  recorded `checkpoint` (`_infer_lm_adapt_source`), else NA;
- `eval_task`: the task whose data the row was scored on: the run's own `task`, or for a
  zero-shot transfer row (`repro.transfer`, `<run_dir>/transfer/<task>/result.json`) the target
  task; SuperGLUE points use only rows with `eval_task == task`;
- `status`: `finished` | `failed` | `running` (as the run wrote it in result.json),
  `incomplete` (a run dir with `metrics.jsonl` or `config.yaml` but no result.json: still running,
  killed or pre-empted — we cannot tell which), `corrupt` (result.json unreadable or malformed; a
  `CollectWarning` names the file);
- `score` (the task's single score, 0-100: the mean of its metrics), then one `metric/<name>`
  column per metric any run reported (e.g. `metric/accuracy`, `metric/f1_macro`, `metric/em`);
- `best_step`, `wall_s`, `precision` (what the run computed in: `bf16`, `tf32` or `fp32`,
  `repro.precision`; NA for a run from before the key), `grad_accum` (micro-batches per step:
  with dropout a run's numbers depend on it, `docs/cluster.md`; NA before the key),
  `trainable_params`, `frozen_params`, `error`, `run_dir`, `wandb_id`.

`run_dir` is the local run directory, or for W&B rows the run path `entity/project/run_id`.
The last column, `selection`, says which checkpoint a multi-task row (`method=model_multitask`)
reports: `task` (each task at its own best eval, T5's rule, the default) or `mean` (the step of
the best mean task score); NA for a single-task run, whose one task's best is its row. The
result.json of such a row holds both under `selections` (docs/model_tuning.md).
"""

from __future__ import annotations

import errno
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from repro.config import (
    LM_ADAPT_SOURCES,
    RELEASED_LM_ADAPT_STEPS,
    RESOLVED_LM_ADAPT_SOURCES,
    is_released_lm_adapt,
    resolve_lm_adapt_source,
)
from repro.methods import DEFAULT_METHOD

AXES = (
    "family",
    "size",
    "params",
    "method",
    "objective",
    "lm_adapt_steps",
    "lm_adapt_source",
    "prompt_len",
    "init",
    "task",
    "seed",
)
DEFAULT_FAMILY = "t5"  # repro.family.T5
# The axes only a method that trains a prompt has (repro.methods.Method.prompt_axes).
PROMPT_AXES = ("prompt_len", "init")
# Frozen parameter counts of the five T5.1.1 sizes (PAPER.md); fills `params` when a run lacks it.
T5_PARAMS = {
    "small": 76_961_152,
    "base": 247_577_856,
    "large": 783_150_080,
    "xl": 2_849_757_184,
    "xxl": 11_135_332_352,
}
STATUSES = ("finished", "failed", "running", "incomplete", "corrupt")
METRIC_PREFIX = "metric/"
_INT_COLUMNS = (
    "params",
    "lm_adapt_steps",
    "prompt_len",
    "seed",
    "best_step",
    "grad_accum",
    "trainable_params",
    "frozen_params",
)
_TAIL_COLUMNS = (
    "best_step",
    "wall_s",
    "precision",
    "grad_accum",
    "trainable_params",
    "frozen_params",
    "error",
    "run_dir",
    "wandb_id",
    "selection",
)
_CHECKPOINT = "_checkpoint"  # a row's recorded checkpoint, until `to_frame` has used it


class CollectWarning(UserWarning):
    """A run file could not be read; its row is kept with status `corrupt` or `incomplete`."""


def row_from_result(result: Any) -> dict[str, Any]:
    """Flatten one result.json (or W&B summary) dict into a frame row."""
    if not isinstance(result, Mapping):
        raise ValueError(f"expected a JSON object, got {type(result).__name__}")
    metrics = result.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise ValueError(f"'metrics' must be an object of name -> number, got {metrics!r}")
    metrics = dict(metrics)
    for key, value in result.items():  # flat "metrics/<name>" keys (W&B style)
        if isinstance(key, str) and key.startswith("metrics/"):
            metrics.setdefault(key.removeprefix("metrics/"), value)
    row: dict[str, Any] = {axis: result.get(axis) for axis in AXES}
    row["eval_task"] = result.get("eval_task")  # set by repro.transfer; else the run's task
    row["status"] = result.get("status")
    row["score"] = result.get("score")
    numeric = [v for v in metrics.values() if _is_number(v)]
    if is_missing(row["score"]) and numeric:  # the paper's rule: mean of the task's metrics
        row["score"] = sum(numeric) / len(numeric)
    for name, value in metrics.items():
        row[METRIC_PREFIX + str(name)] = value
    for key in _TAIL_COLUMNS:
        if key in result and key != "run_dir":
            row[key] = result[key]
    row[_CHECKPOINT] = result.get("checkpoint")  # not a column: infers a missing lm_adapt_source
    return row


def axes_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Axes from a resolved config: `prompt_len: 100` at top level, or a group like
    `model: {size: base, params: ...}`, `task: {name: rte}`, `objective: {name: lm_adapt,
    lm_adapt_steps: 100000}`. Unknown layouts give NA, not an error."""
    out: dict[str, Any] = {}
    model = cfg.get("model")
    objective = cfg.get("objective")
    groups = {
        "family": (cfg.get("family"), _group(model, "family")),
        "size": (cfg.get("size"), _group(model, "size", "name")),
        "params": (cfg.get("params"), _group(model, "params")),
        "method": (_group(cfg.get("method"), "name", "method"),),
        "objective": (_group(objective, "name", "objective"),),
        "lm_adapt_steps": (cfg.get("lm_adapt_steps"), _group(objective, "lm_adapt_steps")),
        "prompt_len": (cfg.get("prompt_len"), _group(cfg.get("prompt"), "prompt_len", "length")),
        "init": (_group(cfg.get("init"), "name", "init"),),
        "task": (_group(cfg.get("task"), "name", "task"),),
        "seed": (cfg.get("seed"),),
    }
    for axis, candidates in groups.items():
        value = next((c for c in candidates if not is_missing(c)), None)
        if value is not None and not isinstance(value, Mapping):
            out[axis] = value
    # A run's config.yaml holds the choice (auto | own): resolve it as the run did. A W&B
    # config holds the resolved recipe at its top (from `Config.axes`).
    source = cfg.get("lm_adapt_source")
    if source in LM_ADAPT_SOURCES and isinstance(model, Mapping) and "objective" in out:
        checkpoints = model.get("checkpoints")
        checkpoints = checkpoints if isinstance(checkpoints, Mapping) else {}
        source = resolve_lm_adapt_source(
            out["objective"],
            out.get("lm_adapt_steps"),
            source,
            model.get("path"),
            checkpoints.get("lm_adapt"),
            model.get("lm_adapt_checkpoint_steps", RELEASED_LM_ADAPT_STEPS),
        )
    if source in RESOLVED_LM_ADAPT_SOURCES:
        out["lm_adapt_source"] = source
    return out


def _infer_lm_adapt_source(axes: Mapping[str, Any], checkpoint: Any) -> str | None:
    """The recipe of a run that did not record one: `none` when its axes say no LM adaptation
    (a span-corruption objective, or 0 steps); else from the checkpoint it loaded: a Google
    release (`google/t5-<size>-lm-adapt`) → `released`; a `repro.lm_adapt` output (a `step_<N>`
    directory, or one under an `lm_adapt` directory) → `own`; anything else → None (NA)."""
    objective, steps = axes.get("objective"), axes.get("lm_adapt_steps")
    if is_missing(objective):
        return None
    if objective != "lm_adapt" or (_is_number(steps) and steps == 0):
        return "none"
    if not isinstance(checkpoint, str) or not checkpoint:
        return None
    if is_released_lm_adapt(checkpoint):
        return "released"
    parts = PurePath(checkpoint).parts
    if any(p == "lm_adapt" or re.fullmatch(r"step_\d+", p) for p in parts):
        return "own"
    return None


def _group(node: Any, *keys: str) -> Any:
    """A scalar config value, or the first of `keys` inside a config-group mapping."""
    if not isinstance(node, Mapping):
        return node
    return next((node[k] for k in keys if not is_missing(node.get(k))), None)


def to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The results frame of rows made by `row_from_result` (axes filled in by the reader):
    the columns above, in their order, numbers as numbers and NA as None in text columns."""
    for row in rows:  # once every other axis is filled in (from config.yaml, W&B config)
        checkpoint = row.pop(_CHECKPOINT, None)
        if row.get("lm_adapt_source") not in RESOLVED_LM_ADAPT_SOURCES:
            row["lm_adapt_source"] = _infer_lm_adapt_source(row, checkpoint)
        if is_missing(row.get("eval_task")):  # a run scored on its own task's dev split
            row["eval_task"] = row.get("task")
        if is_missing(row.get("method")):  # a run from before the method axis: prompt tuning
            row["method"] = DEFAULT_METHOD
        if is_missing(row.get("family")):  # a run from before decoder-only backbones: T5
            row["family"] = DEFAULT_FAMILY
    metric_cols = sorted({k for r in rows for k in r if k.startswith(METRIC_PREFIX)})
    columns = [*AXES, "eval_task", "status", "score", *metric_cols, *_TAIL_COLUMNS]
    df = pd.DataFrame(list(rows), columns=columns)
    for col in ["score", "wall_s", *metric_cols]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in _INT_COLUMNS:
        df[col] = _to_int(df[col])
    strings = (
        "family",
        "size",
        "method",
        "objective",
        "lm_adapt_source",
        "init",
        "task",
        "eval_task",
    )
    strings = (*strings, "status", "precision", "error", "selection")
    for col in (*strings, "run_dir", "wandb_id"):
        df[col] = df[col].astype("object").where(df[col].notna(), None)
    # Known T5 sizes carry their parameter count even when a run did not record it.
    missing = df["params"].isna() & df["size"].isin(list(T5_PARAMS))
    df.loc[missing, "params"] = df.loc[missing, "size"].map(T5_PARAMS)
    return df


def _to_int(col: pd.Series) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce")
    whole = num.dropna()
    if (whole == whole.round()).all():
        return num.round().astype("Int64")
    return num.astype("float64")  # non-integral values are kept, not truncated


def load_frame(path: str | Path) -> pd.DataFrame:
    """Read a results frame written by the CLI (`.csv` or `.parquet`)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        for col in _INT_COLUMNS:
            if col in df:
                df[col] = _to_int(df[col])
        return df
    raise ValueError(f"unknown frame format {path.suffix!r} for {path}; use .csv or .parquet")


def write_frame(df: pd.DataFrame, output: Path) -> None:
    """Write aside, then rename over `output`: readers see the old frame or the new one."""
    if output.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(output))
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file where the path needs a directory
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), err.filename) from None
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        if output.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


def is_missing(value: Any) -> bool:
    """None, pandas' NA or a float NaN: a value a run did not record."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not is_missing(value)
