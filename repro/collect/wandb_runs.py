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

**Offline runs** (`logger=wandb logger.mode=offline`, or no API key) never reach W&B: each keeps
its record log in `<run_dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb`, the file
`wandb sync` would upload. `collect_wandb_offline` reads those files under a directory (a sweep
dir) into the same frame, without the network or an account: `OfflineApi` serves them to
`collect_wandb` as `wandb.Api` serves a project. A run resumed from `last/` appends a second
offline directory under the same id; its files are read in time order as one run, as W&B
merges them on sync. A run whose log has no exit record yet has state `running`.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
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


# --- offline runs: W&B's record log read back ---------------------------------------------------

OFFLINE_GLOB = "offline-run-*"  # W&B's directory of one offline run (start time, run id)
_BLOCK = 32 * 1024  # the record log's block size (a LevelDB-style log)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4  # chunk kinds: a whole record, or its parts


def collect_wandb_offline(root: str | Path, group: str | None = None) -> pd.DataFrame:
    """The results frame of the offline W&B runs under ``root`` (each run dir's
    ``wandb/offline-run-*/``), the same rows `collect_wandb` gives once they are synced.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ImportError: wandb is not installed (its record format is read with its protobufs).
    """
    return collect_wandb(str(root), group=group, api=OfflineApi(root))


class OfflineApi:
    """Stands in for ``wandb.Api()`` in `collect_wandb`: serves the offline runs under ``root``
    (a run with the same id in several offline directories, i.e. resumed, is one run)."""

    def __init__(self, root: str | Path, wait_s: float = 0.0):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        by_id: dict[str, list[Path]] = {}
        for run_dir in sorted(filter(Path.is_dir, root.rglob(OFFLINE_GLOB)), key=_started):
            for log in run_dir.glob("run-*.wandb"):  # its id: W&B names the log after it
                by_id.setdefault(log.stem.removeprefix("run-"), []).append(run_dir)
                break
        self._runs = [read_offline_run(dirs, wait_s=wait_s) for dirs in by_id.values()]

    def runs(self, path: str, filters: dict | None = None) -> list[SimpleNamespace]:
        group = (filters or {}).get("group")
        return [r for r in self._runs if group is None or r.group == group]


def _started(run_dir: Path) -> tuple[str, int, str]:
    """Sort key in start order: ``offline-run-<YYYYmmdd_HHMMSS>-<id>``, and W&B's ``-1``,
    ``-2``... suffix for a run (re)started again within the same second."""
    name = run_dir.name.removeprefix("offline-run-")
    stamp, _, rest = name.partition("-")
    _, _, again = rest.partition("-")
    return stamp, int(again) if again.isdigit() else 0, str(run_dir)


def read_offline_run(run_dirs: Path | list[Path], wait_s: float = 0.0) -> SimpleNamespace:
    """One offline run (its ``offline-run-*`` directories, oldest first) → ``id``, ``name``,
    ``group``, ``tags``, ``project``, ``config``, ``history`` (rows), ``summary``, ``exit_code``,
    ``state`` and ``path`` (its newest directory), as `collect_wandb` reads a W&B run.

    W&B's service may still be writing the log when ``finish()`` returns in the same process:
    ``wait_s`` > 0 waits up to that long for the exit record (a run still going has none).
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    deadline = time.monotonic() + wait_s
    while True:
        run = SimpleNamespace(
            id=None, name=None, group=None, tags=[], project=None, entity=None, config={}
        )
        run.history, run.summary, run.exit_code = [], {}, None
        for run_dir in dirs:
            run.exit_code = None  # a resumed run's last part says how it ended
            for log in sorted(run_dir.glob("run-*.wandb")):
                _read_records(log, run)
        if run.exit_code is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    run.config.pop("_wandb", None)
    run.state = {None: "running", 0: "finished"}.get(run.exit_code, "failed")
    logs = sorted(dirs[-1].glob("run-*.wandb"))
    run.id = run.id or (logs[0].stem.removeprefix("run-") if logs else dirs[-1].name)
    run.path = str(dirs[-1])
    return run


def _read_records(log: Path, run: SimpleNamespace) -> None:
    """Apply the records of one ``run-<id>.wandb`` file to ``run``, in order."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2  # imported here: local collection needs no W&B

    for chunk in _record_chunks(log):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(chunk)
        except DecodeError as e:
            warnings.warn(f"{log}: unreadable record skipped ({e})", CollectWarning, stacklevel=4)
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group = r.run_id, r.display_name, r.run_group
            run.tags, run.project, run.entity = list(r.tags), r.project, r.entity
            _apply(run.config, r.config.update)
        elif kind == "config":
            _apply(run.config, record.config.update)
        elif kind == "history":
            run.history.append(
                {"/".join(_item_key(i)): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "summary":
            _apply(run.summary, record.summary.update)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code


def _record_chunks(log: Path) -> list[bytes]:
    """The records of a W&B record log as bytes: a 7-byte file header (``:W&B``, version),
    then 32 KiB blocks of chunks, each behind a 7-byte header (CRC, length, kind); a record
    longer than a block's rest is split into FIRST/MIDDLE/LAST chunks. A torn tail is dropped."""
    data = log.read_bytes()
    if data[:4] != b":W&B":
        warnings.warn(f"{log} is not a W&B record log; skipped", CollectWarning, stacklevel=5)
        return []
    pos, chunks, pending = 7, [], b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a chunk header never straddles blocks: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind, chunk = data[pos + 6], data[pos + 7 : pos + 7 + length]
        if len(chunk) < length:
            break  # the writer had not finished this chunk
        pos += 7 + length
        if kind == _FULL:
            chunks.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            chunks.append(pending + chunk)
    return chunks


def _item_key(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _apply(target: dict, items: Any) -> None:
    """Config or summary updates (``key`` or ``nested_key`` → JSON value) into ``target``."""
    for item in items:
        *parents, last = _item_key(item)
        node = target
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(item.value_json)
