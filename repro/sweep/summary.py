"""The Hydra callback that counts a sweep's jobs, and the sweep's stop (Ctrl-C): see
:mod:`repro.sweep`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from repro.job.preemption import EXIT_INTERRUPT
from repro.sweep.outcome import (
    EXIT_FAILED_JOBS,
    ErrorLines,
    Stamps,
    job_outcome,
    next_step,
    outcome_stamps,
    read_status,
    summary_line,
)
from repro.trainer import StopFlag

RECORDS = ".sweep_jobs"  # <sweep dir>/.sweep_jobs/<sweep id>/<job num>.json
STOP = "stop"  # <sweep dir>/.sweep_jobs/<sweep id>/stop: the sweep is stopping (Ctrl-C)


class SweepSummary(Callback):
    """Counts a sweep's jobs by outcome, names the failed ones, exits 1 if any failed; stops the
    whole sweep on Ctrl-C (exit 130).

    1, not 2 or 75: 2 says "fix the command, nothing ran", but this sweep ran and its other
    jobs' results stand; 75 asks a scheduler to requeue. 1 is also what a single run exits with
    when the run itself failed. Only in MULTIRUN mode; a single run reports through
    ``repro.run``'s own exit code.

    Ctrl-C: the sweep's stop is a file, ``<sweep dir>/.sweep_jobs/<sweep id>/stop``, written by
    the launching process (its SIGINT handler) or by a job that received the SIGINT itself
    (:func:`stop_sweep`), so that every process of the sweep sees it, a job under submitit (its
    own process, on another node under SLURM) included: a running job's stop flag
    (:func:`job_stop_flag`) reads it after every step and checkpoints, a job about to start does
    not start (``on_job_start``), and the launchers start no other batch or pack.
    """

    def __init__(self) -> None:
        self.sweep_id: str | None = None
        self.sweep_dir: str | None = None
        self.pid: int | None = None  # the launching process
        self.planned: int | None = None  # how many jobs the sweep has, when known
        self._stderr: ErrorLines | None = None
        self._before: Stamps = {}
        self._records: dict[int, dict[str, Any]] = {}  # jobs run in the launching process
        self._stop_reason: str | None = None
        self._previous_sigint: Any = None
        self._dry_run: DryRun | None = None

    def __getstate__(self) -> dict[str, Any]:  # pickled to submitit's jobs with the launcher
        return {**self.__dict__, "_previous_sigint": None, "_records": {}, "_dry_run": None}

    # --- in the launching process, before any job (pickled with the launcher to submitit jobs)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**9}"
        self.sweep_dir = str(Path(str(config.hydra.sweep.dir)).absolute())
        self.pid = os.getpid()
        self.planned = planned_jobs(config)
        self._dry_run = DryRun.start(config)
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:  # a sweep started in the background stays deaf
                self._previous_sigint = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _on_ctrl_c(self, signum: int, frame: Any) -> None:
        """SIGINT in the launching process (between jobs, or while submitit's jobs run): stop."""
        if self._stop_reason is not None:  # Ctrl-C twice: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.request_stop("Ctrl-C")

    @property
    def records_dir(self) -> Path:
        return Path(str(self.sweep_dir)) / RECORDS / str(self.sweep_id)

    def request_stop(self, reason: str) -> None:
        """Stop the sweep: every running job checkpoints at its next step, none starts."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._dry_run is None:  # a dry run writes nothing: it stops in this process
            self.records_dir.mkdir(parents=True, exist_ok=True)
            (self.records_dir / STOP).write_text(reason)

    def stop_reason(self) -> str | None:
        """Why the sweep is stopping (``Ctrl-C``), or None: it goes on."""
        if self._stop_reason is None and self.sweep_id is not None:
            with contextlib.suppress(OSError):
                self._stop_reason = (self.records_dir / STOP).read_text() or "Ctrl-C"
        return self._stop_reason

    # --- where the job runs

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _running
        if not self._in_sweep(config):
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        if self.stop_reason() is not None:  # the sweep is stopping: this job does not start
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # Hydra made it for the job; only if nothing is in it
            if os.getpid() == self.pid:
                self.end_stopped()
            sys.exit(0)  # a submitit job: no result, no record; the launcher counts it
        _running = self
        self._before = outcome_stamps(run_dir)
        stream = sys.stderr
        if isinstance(stream, ErrorLines):  # left by a job that ended in sys.exit (preempted)
            stream = stream.stream
        self._stderr = ErrorLines(stream)
        sys.stderr = self._stderr

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        global _running
        _running = None
        if not self._in_sweep(config) or self._stderr is None:
            return
        if sys.stderr is self._stderr:
            sys.stderr = self._stderr.stream
        run_dir = Path(config.hydra.runtime.output_dir)
        if OmegaConf.select(config, "dry_run", default=False) and not self._stderr.lines:
            outcome = {"status": "dry run", "error": None}  # an estimate: nothing is written
            if self._dry_run is not None:
                self._dry_run.made(run_dir)
        else:
            outcome = job_outcome(run_dir, self._before, self._stderr.lines, job_return)
        self._stderr = None
        self.record(int(config.hydra.job.num), run_dir, outcome)

    def record(self, job: int, run_dir: Path, outcome: dict[str, Any]) -> None:
        """Leave one job's outcome for the launching process (the packed launcher calls this for
        each member of a pack, which runs as one Hydra job of its own)."""
        record = {"job": job, "run_dir": str(run_dir), **outcome}
        if os.getpid() == self.pid:
            self._records[job] = record
            return
        path = self.records_dir / f"{job}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    # --- in the launching process

    def read_record(self, job: int) -> dict[str, Any] | None:
        """One job's record, once it has ended (None: no record, it did not end normally)."""
        if job in self._records:
            return self._records[job]
        path = self.records_dir / f"{job}.json"
        return read_status(path) if path.exists() else None

    def _jobs(self) -> list[dict[str, Any]]:
        """Every job's record, in job order; the records on disk are then removed."""
        records = {**self._records}
        for path in self.records_dir.glob("*.json"):
            record = read_status(path)
            records.setdefault(record.get("job", -1), record)
        shutil.rmtree(self.records_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # removed only when no other sweep's records are in it
            self.records_dir.parent.rmdir()
        return [records[k] for k in sorted(records, key=lambda k: (not isinstance(k, int), k))]

    def _leave(self) -> None:
        if self._previous_sigint is not None and signal.getsignal(signal.SIGINT) == self._on_ctrl_c:
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None
        if self._dry_run is not None:
            self._dry_run.end()

    def end_stopped(self, code: int = EXIT_INTERRUPT) -> NoReturn:
        """The sweep stops here: one line (how its jobs stand, what was not started), exit 130
        (75 for a preemption signal under the packed launcher)."""
        jobs = self._jobs()
        self._leave()
        if self.planned is not None and self.planned > len(jobs):
            jobs += [{"status": "not started"}] * (self.planned - len(jobs))
        reason = self.stop_reason() or "Ctrl-C"
        counts = summary_line(str(self.sweep_dir), jobs).partition(": ")[2]
        print(
            f"sweep {self.sweep_dir}: stopped by {reason}: {counts}; relaunch the same command "
            "to resume",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(code)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_id is None or self.sweep_dir is None:
            return
        if self.stop_reason() is not None:  # Ctrl-C during the last jobs
            self.end_stopped()
        jobs = self._jobs()
        self._leave()
        failed = [j for j in jobs if j.get("status") == "failed"]
        line = summary_line(self.sweep_dir, jobs)
        if not failed:
            print(line)
            if any(j.get("status") in ("finished", "skipped") for j in jobs):
                print(f"next: {next_step(self.sweep_dir, jobs)}")
            return
        print(line, file=sys.stderr)
        # no `error:` prefix here: each failed job printed its own `error:` line already
        print(f"{len(failed)} of {len(jobs)} jobs failed:", file=sys.stderr)
        for job in failed:
            print(f"  {job.get('run_dir')}: {job.get('error')}", file=sys.stderr)
        sys.exit(EXIT_FAILED_JOBS)

    @staticmethod
    def _in_sweep(config: DictConfig) -> bool:
        return OmegaConf.select(config, "hydra.mode", default=None) == RunMode.MULTIRUN


# The sweep whose job runs in this process now (set from on_job_start to on_job_end).
_running: SweepSummary | None = None


class SweepStopFlag(StopFlag):
    """A job's stop flag that is also set once its sweep is stopping (the stop file appears):
    read after every step, so a job that missed the Ctrl-C (it was starting, or only the
    launching process got the signal) still checkpoints at its next step."""

    def __init__(self, summary: SweepSummary) -> None:
        self.summary = summary
        super().__init__()

    @property
    def reason(self) -> str | None:
        if self._reason is None and (why := self.summary.stop_reason()) is not None:
            self._reason = f"the sweep is stopping: {why}"
        return self._reason

    @reason.setter
    def reason(self, value: str | None) -> None:
        self._reason = value


def job_stop_flag() -> StopFlag:
    """The stop flag of the job that runs now (:class:`SweepStopFlag` inside a sweep)."""
    return SweepStopFlag(_running) if _running is not None else StopFlag()


def stop_sweep(reason: str) -> None:
    """The running job got Ctrl-C itself: its sweep stops (no-op outside a sweep)."""
    if _running is not None:
        _running.request_stop(reason)


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs Hydra's basic sweeper makes of this command (None for another sweeper,
    which says so itself: the panel sweeper sets ``SweepSummary.planned``)."""
    sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default=None)
    if sweeper != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
        return None
    try:
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(args)
        return len(BasicSweeper.split_arguments(parsed, max_batch_size=None)[0])
    except Exception:  # the sweeper itself reports a bad override
        return None


class DryRun:
    """A sweep's ``dry_run=true`` writes nothing: Hydra's sweeper writes ``multirun.yaml`` into a
    scratch directory instead of the sweep's (``hydra.sweep.dir`` is pointed there for the
    in-process launchers: basic, packed), and the directories Hydra made for its jobs are removed
    when empty, with the sweep's directory and its parents if the sweep made them."""

    def __init__(self, sweep_dir: Path, scratch: str) -> None:
        self.sweep_dir = sweep_dir
        self.scratch = scratch
        self.existed = next(p for p in (sweep_dir, *sweep_dir.parents) if p.exists())
        self.job_dirs: list[Path] = []

    @classmethod
    def start(cls, config: DictConfig) -> DryRun | None:
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        in_process = launcher.endswith((".BasicLauncher", ".PackedLauncher"))
        if not (OmegaConf.select(config, "dry_run", default=False) and in_process):
            return None  # (under submitit a job's printout is its .submitit log: kept)
        dry = cls(Path(str(config.hydra.sweep.dir)).absolute(), tempfile.mkdtemp("-dry-run"))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = dry.scratch
        return dry

    def made(self, run_dir: Path) -> None:
        """A dry-run job has ended: Hydra's directory for it goes now (not only at the end, which
        a sweep killed midway never reaches), if nothing is in it."""
        self.job_dirs.append(run_dir)
        with contextlib.suppress(OSError):
            run_dir.rmdir()

    def end(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        for run_dir in self.job_dirs:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        path = self.sweep_dir
        while path != self.existed and path != path.parent:  # what the sweep made, if empty
            with contextlib.suppress(OSError):
                path.rmdir()
            path = path.parent
