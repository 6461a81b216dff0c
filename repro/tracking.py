"""Where a run's numbers go: local files always, W&B when asked — through one sink interface.

Local files (the run directory contract: repro/rundir.py):
  ``metrics.jsonl``  one JSON object per line (``{"kind": "train"|"eval", "step": ...}``);
                     each line is written with a single ``write`` on an append-mode file, and a
                     resumed run first drops lines past its checkpoint, so no line is broken or
                     duplicated.
  ``result.json``    written last, atomically (temp file + rename).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from repro.cli import first_line
from repro.config import check_wandb_mode_env
from repro.files import jsonable, write_text_atomic

log = logging.getLogger(__name__)


class MetricsLog:
    """Append-only ``metrics.jsonl``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(jsonable(record)) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of a whole line: no interleaving, no half records
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """All complete records; a torn last line (killed mid-write) is skipped.

        Raises:
            ValueError: any other line that is no JSON record (random bytes, a disk error),
                naming the file, the line and what to do.
        """
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not a record")
            except ValueError as err:  # UnicodeDecodeError and JSONDecodeError included
                # The last line, unterminated, ASCII and begun as every record is: written
                # when a kill came (each line is one write of ASCII JSON). Anything else is
                # corruption.
                if number == len(lines) and line.startswith(b"{") and line.isascii():
                    continue
                raise ValueError(
                    f"metrics file {self.path} is corrupt at line {number} ({first_line(err)}); "
                    "delete it to go on (the run resumes from last/ and logs from there) or "
                    f"delete {self.path.parent} to train the run again"
                ) from None
            records.append(record)
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only records up to ``step`` (a resumed run re-does what came after)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))


class NullSink:
    """Logs nowhere; same methods as ``WandbSink`` so the trainer never branches."""

    run_id: str | None = None

    def log(self, record: Mapping[str, Any], step: int, scope: str = "") -> None:
        pass

    def summary(self, result: Mapping[str, Any]) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


class WandbUnavailable(OSError):
    """wandb could not start a run: reported as one line saying which setting to change."""


def _wandb_error(err: Exception) -> str:
    """One line for a wandb.init failure; pydantic's (a bad setting) names the field and value."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            env = f"WANDB_{where.upper()}"
            return f"setting {where}={first['input']!r} ({env}, if you set it): {first['msg']}"
        except (TypeError, LookupError, AttributeError):
            pass
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


class WandbSink:
    """Logs to Weights & Biases: config at start, every record, the result as the summary.

    The run's ``config`` holds the resolved config plus the axes at the top level and the
    ``summary`` holds every result.json field under the same key, which is what
    ``repro.collect.collect_wandb`` reads back.
    """

    def __init__(
        self,
        *,
        project: str,
        entity: str | None,
        group: str | None,
        name: str,
        tags: list[str],
        mode: str | None,
        config: Mapping[str, Any],
        run_dir: Path,
        resume_id: str | None = None,
    ):
        check_wandb_mode_env()  # wandb reads $WANDB_MODE even when `mode` is given
        try:
            import wandb
        except ImportError:
            raise WandbUnavailable(
                "logger=wandb needs the wandb package: pip install wandb, or use logger=none"
            ) from None
        mode = mode or default_mode()
        try:
            self._run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                name=name,
                tags=tags,
                mode=mode,
                config=dict(config),
                dir=str(run_dir),
                id=resume_id,
                resume="allow" if resume_id else None,
                reinit="finish_previous",
            )
        except Exception as err:  # no network, no login, a bad entity, a bad WANDB_* variable
            fixes = "use logger=none to log only to the run directory"
            if mode not in ("offline", "disabled"):
                fixes += (
                    ", or logger.mode=offline (or WANDB_MODE=offline) to log locally and "
                    "`wandb sync` later"
                )
            raise WandbUnavailable(
                f"W&B could not start a run in mode {mode!r} ({_wandb_error(err)}); {fixes}"
            ) from None
        self.run_id = getattr(self._run, "id", None)
        # The trainer's step restarts at 0 for each task of a task=superglue job and goes back
        # to the checkpoint on resume, but W&B drops every row logged with a `step=` below the
        # last one. So rows go on W&B's own counter and charts use the trainer's step as x.
        self._defined: set[str] = set()

    def log(self, record: Mapping[str, Any], step: int, scope: str = "") -> None:
        """``scope`` (a task's name in a multi-task job) puts keys under ``<scope>/train/...``."""
        prefix = f"{scope}/" if scope else ""
        prefix += record.get("kind", "train")
        if prefix not in self._defined:
            self._run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
            self._defined.add(prefix)
        flat = {f"{prefix}/{k}": v for k, v in record.items() if k not in ("kind", "step")}
        self._run.log({**flat, f"{prefix}/step": step})

    def summary(self, result: Mapping[str, Any]) -> None:
        for key, value in jsonable(result).items():
            self._run.summary[key] = value

    def finish(self, failed: bool = False) -> None:
        self._run.finish(exit_code=1 if failed else 0)


class ScopedSink:
    """One task's view of a multi-task job's sink: its records are logged under ``<task>/``,
    so the 8 tasks of a task=superglue W&B run keep separate curves."""

    def __init__(self, sink, scope: str):
        self._sink, self.scope = sink, scope
        self.run_id = getattr(sink, "run_id", None)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self._sink.log(record, step, scope=self.scope)


def default_mode() -> str:
    """The W&B mode when ``logger.mode`` is null: ``$WANDB_MODE`` if set, else online only when
    an API key is configured (``$WANDB_API_KEY`` or a netrc entry for the W&B host), else offline
    — so a run never blocks on a login prompt or fails for want of a key."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:  # a .netrc that only holds other hosts (git, the HF hub) is no W&B key
        has_key = netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        has_key = False
    return "online" if has_key else "offline"


def build_sink(cfg, *, name: str, group: str, config: Mapping[str, Any], run_dir: Path, tags):
    """``logger=none`` → NullSink (no W&B import at all); ``logger=wandb`` → WandbSink."""
    if cfg.name == "none":
        return NullSink()
    id_file = run_dir / "wandb_id.txt"
    resume_id = id_file.read_text().strip() if id_file.exists() else None
    sink = WandbSink(
        project=cfg.project,
        entity=cfg.entity,
        group=cfg.group or group,
        name=name,
        tags=[*cfg.tags, *tags],
        mode=cfg.mode,
        config=config,
        run_dir=run_dir,
        resume_id=resume_id,
    )
    if sink.run_id:
        id_file.write_text(sink.run_id)
    return sink
