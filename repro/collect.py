"""Collect runs into one pandas frame: one row per run, from run directories or from W&B.

The **results frame** (`collect_runs`, `collect_wandb`) has these columns, in this order:

- the axes: `size`, `params`, `method`, `objective`, `lm_adapt_steps`, `lm_adapt_source`,
  `prompt_len`, `init`, `task`, `seed` (missing ones are NA, never an error). `method` is what
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
- `best_step`, `wall_s`, `trainable_params`, `frozen_params`, `error`, `run_dir`, `wandb_id`.

`run_dir` is the local run directory, or for W&B rows the run path `entity/project/run_id`.

**The W&B contract** (what the W&B logger writes and `collect_wandb` reads):

- `run.config` holds the resolved run config. Axes are read from it the same way as from a run
  dir's `config.yaml` (top-level keys, or the `name`/`size`/`params` of a config group).
- `run.summary` holds the fields of result.json under the same keys (`status`, `error`, the axes,
  `best_step`, `metrics` as a nested dict, `score`, `wall_s`, ...). Summary axes win over config
  axes, as result.json does locally. Flat `metrics/<name>` summary keys are accepted too.
- A W&B run whose summary has no `status` gets one from `run.state`: `running` → running,
  `failed`/`crashed` → failed, anything else (finished without a logged result, killed) →
  incomplete.

**SuperGLUE frames** (`superglue_scores`, `superglue_frame`) turn finished runs into figure
points: for each (size, params, axis value, seed) the mean of the 8 task scores, then mean and std
over seeds. See `superglue_frame` for how missing tasks and duplicate runs are handled.

CLI: `python -m repro.collect <dirs...> -o results/<name>.csv [--wandb entity/project --group G]`.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import pandas as pd
import yaml

from repro.config import (
    LM_ADAPT_SOURCES,
    RELEASED_LM_ADAPT_STEPS,
    RESOLVED_LM_ADAPT_SOURCES,
    is_released_lm_adapt,
    model_lm_adapt_steps,
    resolve_lm_adapt_source,
)
from repro.methods import DEFAULT_METHOD, METHODS

AXES = (
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
# The axes only a method that trains a prompt has (repro.methods.Method.prompt_axes).
PROMPT_AXES = ("prompt_len", "init")
# The four Figure 3 panels, in the paper's order (a)-(d).
ABLATION_AXES = ("prompt_len", "init", "objective", "lm_adapt_steps")
# The paper's non-ablated setting: LM-adapted T5.1.1 (100K steps), class-label init, 100 tokens.
# `lm_adapt_steps: MODEL_LM_ADAPT_STEPS` holds each size at its own LM-adapted checkpoint: 100K
# for the T5 sizes (Google's releases), 500 for the toy world's (`repro.config.model_lm_adapt_steps`).
MODEL_LM_ADAPT_STEPS = "model"
PAPER_DEFAULTS: dict[str, Any] = {
    "method": DEFAULT_METHOD,  # Figure 3 is prompt tuning's; Figure 1 adds the other methods
    "prompt_len": 100,
    "init": "class_label",
    "objective": "lm_adapt",
    "lm_adapt_steps": MODEL_LM_ADAPT_STEPS,
}
# The paper's LM-adapted backbones are Google's releases. Not an entry of PAPER_DEFAULTS: it is
# held only among LM-adapted runs, and only where a frame mixes recipes (see `panel_runs`).
PAPER_LM_ADAPT_SOURCE = "released"
SUPERGLUE_TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")
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
    "trainable_params",
    "frozen_params",
)
_TAIL_COLUMNS = (
    "best_step",
    "wall_s",
    "trainable_params",
    "frozen_params",
    "error",
    "run_dir",
    "wandb_id",
)
_CHECKPOINT = "_checkpoint"  # a row's recorded checkpoint, until `_to_frame` has used it
# Directories inside a run dir that hold other tools' config.yaml files, never runs.
_SKIP_DIRS = {".hydra", "wandb", "best", "last", "init", "__pycache__", ".git"}


class CollectWarning(UserWarning):
    """A run file could not be read; its row is kept with status `corrupt` or `incomplete`."""


# ----------------------------------------------------------------------------- local run dirs


def collect_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run found (recursively) under each path: a sweep dir, a runs dir or a run dir.

    A run dir is a directory holding `result.json`, or `metrics.jsonl`, or (as a leaf, no run
    below it) `config.yaml`. A directory holding `summary.json` (the parent of a `task=superglue`
    job) is never a row itself; its per-task sub-directories are, and take axes they lack from
    the job's `config.yaml` (task = the sub-directory's name). Paths reached twice count once.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    rows, seen = [], set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such run, runs or sweep directory: {path}")
        root = path.parent if path.is_file() else path
        for run_dir in _find_run_dirs(root):
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                rows.append(_read_run_dir(run_dir))
    return _to_frame(rows)


def _find_run_dirs(root: Path) -> list[Path]:
    found: list[Path] = []

    def visit(d: Path) -> bool:  # True if d or anything below it is a run dir
        try:
            entries = sorted(d.iterdir())
        except OSError as e:
            warnings.warn(f"cannot list {d}: {e}", CollectWarning, stacklevel=3)
            return False
        below = False
        for e in entries:
            if e.is_dir() and not e.is_symlink() and e.name not in _SKIP_DIRS:
                below = visit(e) or below
        names = {e.name for e in entries}
        is_run = "summary.json" not in names and (
            "result.json" in names
            or "metrics.jsonl" in names
            or ("config.yaml" in names and not below)
        )
        if is_run:
            found.append(d)
        return is_run or below

    visit(root)
    return sorted(found)


def _read_run_dir(run_dir: Path) -> dict[str, Any]:
    result_path = run_dir / "result.json"
    if not result_path.exists():
        row = _axes_from_config_file(run_dir)
        row["status"] = "incomplete"
    else:
        try:
            result = json.loads(result_path.read_text())
            row = _row_from_result(result)
        except (OSError, ValueError, TypeError) as e:
            warnings.warn(
                f"{result_path}: unreadable result ({e}); kept as status 'corrupt'",
                CollectWarning,
                stacklevel=3,
            )
            row = _axes_from_config_file(run_dir)
            row.update(status="corrupt", error=f"corrupt result.json: {e}")
        else:
            if row["status"] not in STATUSES:
                warnings.warn(
                    f"{result_path}: status {row['status']!r} is not one of {STATUSES}; "
                    "kept as status 'corrupt'",
                    CollectWarning,
                    stacklevel=3,
                )
                row["error"] = f"bad status in result.json: {row['status']!r}"
                row["status"] = "corrupt"
            if any(_is_missing(row.get(a)) for a in AXES):  # fill gaps from config.yaml
                for axis, value in _axes_from_config_file(run_dir, quiet=True).items():
                    if _is_missing(row.get(axis)) and not _not_its_axis(row, axis):
                        row[axis] = value
    row["run_dir"] = str(run_dir)
    return row


def _not_its_axis(row: Mapping[str, Any], axis: str) -> bool:
    """True for a prompt axis (`prompt_len`, `init`) of a run whose method trains no prompt:
    its result.json leaves them empty on purpose, and the config's values mean nothing."""
    method = row.get("method")
    if axis not in PROMPT_AXES or _is_missing(method) or method not in METHODS:
        return False
    return not METHODS[method].prompt_axes


def _axes_from_config_file(run_dir: Path, quiet: bool = False) -> dict[str, Any]:
    """Axes from `run_dir/config.yaml`, else from the parent's: a `task=superglue` job writes
    one config at its top and one sub-directory per task, named after the task."""
    path, inherited = run_dir / "config.yaml", False
    if not path.exists():
        path, inherited = run_dir.parent / "config.yaml", True
        if not path.exists():
            return {}
    try:
        cfg = yaml.safe_load(path.read_text())
        if not isinstance(cfg, Mapping):
            raise ValueError(f"expected a mapping, got {type(cfg).__name__}")
    except (OSError, ValueError, yaml.YAMLError) as e:
        if not quiet:
            warnings.warn(
                f"{path}: unreadable config ({e}); axes left empty", CollectWarning, stacklevel=4
            )
        return {}
    axes = _axes_from_config(cfg)
    if inherited:
        axes["task"] = run_dir.name
    return axes


def _axes_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Axes from a resolved config: `prompt_len: 100` at top level, or a group like
    `model: {size: base, params: ...}`, `task: {name: rte}`, `objective: {name: lm_adapt,
    lm_adapt_steps: 100000}`. Unknown layouts give NA, not an error."""
    out: dict[str, Any] = {}
    model = cfg.get("model")
    objective = cfg.get("objective")
    groups = {
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
        value = next((c for c in candidates if not _is_missing(c)), None)
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
    if _is_missing(objective):
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
    return next((node[k] for k in keys if not _is_missing(node.get(k))), None)


def _row_from_result(result: Any) -> dict[str, Any]:
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
    if _is_missing(row["score"]) and numeric:  # the paper's rule: mean of the task's metrics
        row["score"] = sum(numeric) / len(numeric)
    for name, value in metrics.items():
        row[METRIC_PREFIX + str(name)] = value
    for key in _TAIL_COLUMNS:
        if key in result and key != "run_dir":
            row[key] = result[key]
    row[_CHECKPOINT] = result.get("checkpoint")  # not a column: infers a missing lm_adapt_source
    return row


# ----------------------------------------------------------------------------- W&B


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
    return _to_frame(rows)


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
        row = _row_from_result(summary)
    except ValueError as e:
        warnings.warn(
            f"W&B run {path}: unreadable summary ({e}); kept as status 'corrupt'",
            CollectWarning,
            stacklevel=3,
        )
        row = {"status": "corrupt", "error": f"corrupt summary: {e}"}
    if task and _is_missing(row.get("task")):
        row["task"] = task
    for axis, value in _axes_from_config(config).items():
        if _is_missing(row.get(axis)):
            row[axis] = value
    if _is_missing(row.get("status")):
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


# ----------------------------------------------------------------------------- frame


def _to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    for row in rows:  # once every other axis is filled in (from config.yaml, W&B config)
        checkpoint = row.pop(_CHECKPOINT, None)
        if row.get("lm_adapt_source") not in RESOLVED_LM_ADAPT_SOURCES:
            row["lm_adapt_source"] = _infer_lm_adapt_source(row, checkpoint)
        if _is_missing(row.get("eval_task")):  # a run scored on its own task's dev split
            row["eval_task"] = row.get("task")
        if _is_missing(row.get("method")):  # a run from before the method axis: prompt tuning
            row["method"] = DEFAULT_METHOD
    metric_cols = sorted({k for r in rows for k in r if k.startswith(METRIC_PREFIX)})
    columns = [*AXES, "eval_task", "status", "score", *metric_cols, *_TAIL_COLUMNS]
    df = pd.DataFrame(list(rows), columns=columns)
    for col in ["score", "wall_s", *metric_cols]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in _INT_COLUMNS:
        df[col] = _to_int(df[col])
    strings = ("size", "method", "objective", "lm_adapt_source", "init", "task", "eval_task")
    strings = (*strings, "status", "error")
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


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and not _is_missing(value)
    )


# ----------------------------------------------------------------------------- SuperGLUE points


def panel_runs(
    df: pd.DataFrame, axis: str | None, defaults: Mapping[str, Any] = PAPER_DEFAULTS
) -> pd.DataFrame:
    """The runs of one figure panel: `axis` free, every other ablation axis at its default.

    A combined frame holds several sweeps, and the default setting is run in each of them; a
    panel must only see runs that differ in its own axis. An axis that takes a single value in
    `df` (e.g. a smoke sweep on a tiny model that fixes its own objective) is left unfiltered.
    For the objective panel, LM-adapted runs are held at `defaults['lm_adapt_steps']` (the
    "LM Adaptation (100K)" line; by default each size's own LM-adapted checkpoint:
    `MODEL_LM_ADAPT_STEPS`) while the other objectives keep whatever steps they record.
    `axis=None` holds every ablation axis (Figure 1: prompt tuning at the paper's setting).
    """
    if axis is not None and axis not in df.columns:
        raise KeyError(f"axis {axis!r} is not a column of the frame; columns: {list(df.columns)}")
    if axis == "lm_adapt_steps":
        df = span_corruption_as_step_zero(df)
    held = {k: v for k, v in defaults.items() if k != axis}
    if axis == "objective":
        held.pop("lm_adapt_steps", None)
    sel = df
    for col, value in held.items():
        if col in sel.columns and sel[col].nunique(dropna=False) > 1:
            sel = sel[sel[col].eq(_held(sel, col, value)).fillna(False).astype(bool)]
    if axis == "objective" and "lm_adapt_steps" in defaults:
        lm = sel["objective"].eq("lm_adapt").fillna(False).astype(bool)
        if sel.loc[lm, "lm_adapt_steps"].nunique(dropna=False) > 1:
            steps = _held(sel, "lm_adapt_steps", defaults["lm_adapt_steps"])
            keep = sel["lm_adapt_steps"].eq(steps).fillna(False).astype(bool)
            sel = sel[~lm | keep]
    if axis != "lm_adapt_steps" and "lm_adapt_source" in sel.columns:
        sel = _hold_lm_adapt_source(sel, defaults.get("lm_adapt_source", PAPER_LM_ADAPT_SOURCE))
    return sel


def span_corruption_as_step_zero(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 3(d)'s 0-step point is T5.1.1 itself: an `objective=lm_adapt lm_adapt_steps=0`
    run loads the span-corruption checkpoint and formats targets as `objective=span_corruption`
    does (`repro.config.checkpoint_for`), so both are one computation (the toy world's 18 pairs
    score the same). In a frame with LM-adapted runs at more than one step count (a Figure 3(d)
    sweep), span-corruption runs count as that 0-step point, so `sweeps/fig3_all.yaml` trains
    it once, in panel (c); where the frame also holds `lm_adapt_steps=0` runs, the two are
    averaged as repeated runs of one point and seed."""
    if not {"objective", "lm_adapt_steps"} <= set(df.columns):
        return df
    lm = df["objective"].eq("lm_adapt").fillna(False).astype(bool)
    span = df["objective"].eq("span_corruption").fillna(False).astype(bool)
    if df.loc[lm, "lm_adapt_steps"].nunique() < 2 or not span.any():
        return df
    df = df.copy()
    df.loc[span, "objective"] = "lm_adapt"
    df.loc[span, "lm_adapt_steps"] = 0
    if "lm_adapt_source" in df.columns:
        df.loc[span, "lm_adapt_source"] = "none"
    return df


def _held(sel: pd.DataFrame, col: str, value: Any) -> Any:
    """The value `panel_runs` holds `col` at: `value`, or per row each size's own LM-adapted
    checkpoint for `MODEL_LM_ADAPT_STEPS`."""
    if col == "lm_adapt_steps" and value == MODEL_LM_ADAPT_STEPS:
        if "size" not in sel.columns:
            return RELEASED_LM_ADAPT_STEPS
        return sel["size"].map(model_lm_adapt_steps)
    return value


def figure1_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of Figure 1: per method (`method` column; a frame without one is prompt tuning),
    prompt tuning at the paper's default setting (`panel_runs(..., None)`) and every other
    method's runs as they are (no prompt axes; model tuning's backbone is its own: the paper
    tunes the public T5.1.1, `conf/method/model.yaml`). Figure 3's panels never see them:
    `PAPER_DEFAULTS` holds `method` at `prompt`."""
    if "method" not in df.columns:
        return panel_runs(df, None)
    method = df["method"].fillna(DEFAULT_METHOD)
    parts = []
    for name in dict.fromkeys(method):
        rows = df[method.eq(name)]
        if name in METHODS and METHODS[name].prompt_axes:
            rows = panel_runs(rows.assign(method=name), None, _prompt_defaults())
        parts.append(rows)
    return pd.concat(parts) if parts else df


def _prompt_defaults() -> dict[str, Any]:
    return {k: v for k, v in PAPER_DEFAULTS.items() if k != "method"}


def _hold_lm_adapt_source(sel: pd.DataFrame, preferred: str) -> pd.DataFrame:
    """One recipe per panel outside Figure 3(d): where LM-adapted runs come from two recipes (a
    frame holding an `lm_adapt_source=own` sweep has own runs at 100K beside the released
    ones), keep the `preferred` ones. `none` runs (span corruption, 0 steps) always stay; a
    frame without any `preferred` run is left as it is (its points are checked later)."""
    source = sel["lm_adapt_source"]
    adapted = source.ne("none").fillna(True).astype(bool)
    keep = source.eq(preferred).fillna(False).astype(bool)
    if source[adapted].nunique(dropna=False) > 1 and keep.any():
        sel = sel[~adapted | keep]
    return sel


def superglue_scores(
    df: pd.DataFrame, axis: str | None, tasks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per (size, params, axis value, seed): the SuperGLUE score of one seed (in Figure 3(d),
    per recipe too: `_point_keys`).

    Only `finished` rows of the given tasks count (failed, running, incomplete and corrupt rows
    are left out here, but stay in the run frame). Several finished runs of the same task at the
    same point and seed (the default setting is run by every sweep) are averaged first.
    A point missing any task gets `superglue` NA, its `n_tasks` and `missing_tasks` say why, and a
    `CollectWarning` lists it: a mean over fewer tasks is not a SuperGLUE score.

    Args:
        df: a results frame (`collect_runs` / `collect_wandb`).
        axis: the panel's axis column (e.g. `prompt_len`), or None for size only (Figure 1).
        tasks: the tasks to average (default the 8 SuperGLUE tasks); toy tasks work the same.

    Returns:
        One row per point and seed: keys, one column per task (its score), `n_tasks`,
        `missing_tasks`, `superglue`.

    Raises:
        KeyError: `axis` is not a column.
        ValueError: another ablation axis varies within a point (select a panel first).
    """
    tasks = list(tasks) if tasks is not None else list(SUPERGLUE_TASKS)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    if axis is not None and axis not in df.columns:
        raise KeyError(f"axis {axis!r} is not a column of the frame; columns: {list(df.columns)}")
    if axis in ("size", "params", "seed", "task"):
        raise ValueError(f"axis {axis!r} is a grouping key already; pick an ablation axis or None")
    keys = [*_point_keys(df, axis), "seed"]
    done = df[(df["status"] == "finished") & df["task"].isin(tasks)]
    if "eval_task" in done.columns:  # zero-shot transfer rows (repro.transfer) score elsewhere
        own = done["eval_task"].isna() | done["eval_task"].eq(done["task"])
        done = done[own.fillna(True).astype(bool)]
    _check_single_setting(done, keys, axis)

    per_task = done.groupby([*keys, "task"], dropna=False, sort=True)["score"].mean()
    wide = per_task.unstack("task").reindex(columns=tasks) if len(done) else None
    if wide is None:
        return pd.DataFrame(columns=[*keys, *tasks, "n_tasks", "missing_tasks", "superglue"])
    wide.columns.name = None
    present = wide.notna()
    out = wide.reset_index()
    out["n_tasks"] = present.sum(axis=1).to_numpy()
    out["missing_tasks"] = present.apply(
        lambda r: ",".join(t for t in tasks if not r[t]), axis=1
    ).to_numpy()
    complete = out["n_tasks"] == len(tasks)
    out["superglue"] = wide.mean(axis=1).to_numpy()
    out.loc[~complete, "superglue"] = float("nan")
    if (~complete).any():
        lines = [
            f"  {dict(zip(keys, r[keys], strict=True))}: missing {r['missing_tasks']}"
            for _, r in out[~complete].iterrows()
        ]
        warnings.warn(
            f"{len(lines)} point(s) lack finished runs of some tasks and are left out of the "
            "SuperGLUE mean:\n" + "\n".join(lines),
            CollectWarning,
            stacklevel=2,
        )
    return out


def superglue_frame(
    df: pd.DataFrame, axis: str | None, tasks: Sequence[str] | None = None, ddof: int = 1
) -> pd.DataFrame:
    """Figure points: per (size, params, axis value) mean and std of the SuperGLUE score over seeds.

    Each seed's score is the mean of its task scores (`superglue_scores`); seeds missing a task
    are excluded from the mean and counted in `n_incomplete` (a point with none left has NA
    `mean`). `std` is the sample std (`ddof=1`, NA for a single seed); pass `ddof=0` for the
    population std.

    Returns:
        Columns `size`, `params`, `<axis>` (if any), `mean`, `std`, `n_seeds`, `n_incomplete`,
        sorted by params then axis value; for `lm_adapt_steps` (Figure 3(d)) also
        `lm_adapt_source` after the axis, when the runs have it: one point per recipe.
    """
    seeds = superglue_scores(df, axis, tasks)
    keys = _point_keys(df, axis)
    if seeds.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n_seeds", "n_incomplete"])
    grouped = seeds.groupby(keys, dropna=False, sort=False)["superglue"]
    out = pd.DataFrame(
        {
            "mean": grouped.mean(),
            "std": grouped.std(ddof=ddof),
            "n_seeds": grouped.count(),
            "n_incomplete": grouped.apply(lambda s: int(s.isna().sum())),
        }
    ).reset_index()
    return out.sort_values(["params", *keys[2:]], kind="stable").reset_index(drop=True)


def _point_keys(df: pd.DataFrame, axis: str | None) -> list[str]:
    """What tells one figure point from another: size, params, the axis; in Figure 3(d) also
    the LM-adaptation recipe, so that a released and an own 100K point are never averaged."""
    keys = ["size", "params", *([axis] if axis else [])]
    if axis == "lm_adapt_steps" and "lm_adapt_source" in df.columns:
        keys.append("lm_adapt_source")
    return keys


def _check_single_setting(done: pd.DataFrame, keys: list[str], axis: str | None) -> None:
    """Raise if one point would average runs that differ in another ablation axis (or, outside
    Figure 3(d), in the LM-adaptation recipe)."""
    others = [a for a in (*ABLATION_AXES, "lm_adapt_source") if a not in keys and a in done.columns]
    if done.empty or not others:
        return
    counts = done.groupby([*keys, "task"], dropna=False)[others].nunique(dropna=False)
    bad = counts[(counts > 1).any(axis=1)]
    if not bad.empty:
        cols = [c for c in others if (bad[c] > 1).any()]
        raise ValueError(
            f"runs at the same point differ in {cols} (first: {dict(zip([*keys, 'task'], bad.index[0], strict=True))}); "
            f"select one panel's runs first, e.g. panel_runs(df, {axis!r})"
        )


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m repro.collect <dirs...> -o results/<name>.csv [--wandb entity/project]`.

    Refuses (one `error:` line, exit 2, the output file left as it was) a directory that does
    not exist, a collection that finds no run at all (an empty frame would replace a good CSV)
    and an output it cannot write. The output is written aside and renamed: a failed write
    never leaves half a file in place of the old one.
    """
    parser = argparse.ArgumentParser(
        prog="python -m repro.collect", description=__doc__.split("\n")[0]
    )
    parser.add_argument("paths", nargs="*", help="sweep, runs or run directories")
    parser.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also collect this W&B project")
    parser.add_argument("--group", help="W&B group (one per sweep)")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb:
        parser.error("give at least one run directory or --wandb entity/project")
    output = Path(args.output)
    if output.suffix not in (".csv", ".parquet"):
        parser.error(f"output must end in .csv or .parquet, got {output.name!r}")

    frames = []
    if args.paths:
        try:
            frames.append(collect_runs(args.paths))
        except FileNotFoundError as err:
            return _error(f"{err}; give a sweep dir (multirun/<sweep_name>), runs/ or a run dir")
    if args.wandb:
        frames.append(collect_wandb(args.wandb, group=args.group))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if df.empty:
        searched = [*args.paths, *([f"W&B {args.wandb}"] if args.wandb else [])]
        kept = f"{output} left as it is" if output.exists() else f"{output} not written"
        return _error(
            f"no run found in {', '.join(map(str, searched))} (a run dir holds result.json, "
            f"metrics.jsonl or config.yaml); {kept}"
        )

    try:
        _write_frame(df, output)
    except OSError as err:
        where = f"{err.filename}: " if err.filename and str(err.filename) != str(output) else ""
        return _error(
            f"cannot write {output}: {where}{err.strerror or err}; give -o a writable .csv or "
            ".parquet path"
        )
    counts = df["status"].value_counts(dropna=False)
    print(f"{len(df)} runs -> {output}")
    for status, n in counts.items():
        print(f"  {status}: {n}")
    return 0


def _write_frame(df: pd.DataFrame, output: Path) -> None:
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


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
