"""The frame read from run directories: find every run below a sweep, runs or run dir and
read its result.json (or, for a run without one, its config.yaml) into a row.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from repro.collect.frame import (
    AXES,
    PROMPT_AXES,
    STATUSES,
    CollectWarning,
    axes_from_config,
    is_missing,
    row_from_result,
    to_frame,
)
from repro.methods import METHODS

# Directories inside a run dir that hold other tools' config.yaml files, never runs.
_SKIP_DIRS = {".hydra", "wandb", "best", "last", "init", "__pycache__", ".git"}


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
    return to_frame(rows)


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
            row = row_from_result(result)
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
            if any(is_missing(row.get(a)) for a in AXES):  # fill gaps from config.yaml
                for axis, value in _axes_from_config_file(run_dir, quiet=True).items():
                    if is_missing(row.get(axis)) and not _not_its_axis(row, axis):
                        row[axis] = value
    row["run_dir"] = str(run_dir)
    return row


def _not_its_axis(row: Mapping[str, Any], axis: str) -> bool:
    """True for a prompt axis (`prompt_len`, `init`) of a run whose method trains no prompt:
    its result.json leaves them empty on purpose, and the config's values mean nothing."""
    method = row.get("method")
    if axis not in PROMPT_AXES or is_missing(method) or method not in METHODS:
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
    axes = axes_from_config(cfg)
    if inherited:
        axes["task"] = run_dir.name
    return axes
