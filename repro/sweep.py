"""What a sweep says when it ends: how its jobs ended, which failed and why, and an exit code.

``python -m repro.run -m ...`` goes on past a failing job (one bad value must not cost the other
runs), so without this a sweep whose every job failed exits 0. :class:`SweepSummary` is a Hydra
callback (registered in ``conf/config.yaml: hydra.callbacks``); a sweep ends with::

    sweep /work/multirun/smoke: 4 jobs: 1 finished, 3 failed, 0 interrupted, 0 skipped
    3 of 4 jobs failed:
      /work/multirun/smoke/rte-tiny-...-s0: ValueError: task 'rte': cannot load split 'train' ...
      /work/multirun/smoke/toy_keyword-tiny-...-p0-...: prompt_len must be an integer >= 1; got 0
      ...

on stderr and exit code 1 (:data:`EXIT_FAILED_JOBS`), or with the first line alone, on stdout,
and exit code 0.

Where each part runs: ``on_job_start``/``on_job_end`` run where the job runs (in the sweep's
process under the basic launcher, in the job's own process under hydra-submitit-launcher);
``on_multirun_end`` runs in the launching process under both. So each job sorts its own outcome
— only it can tell a finished run it skipped from a finished run it refused to touch (another
config in its directory) — and leaves a record in ``<sweep dir>/.sweep_jobs/<sweep id>/``, which
``on_multirun_end`` reads and removes. The sweep id keeps an earlier sweep into the same directory
(``multirun/<sweep_name>``) out of the count.

How a job is counted (:func:`job_outcome`):

- **failed**: its task function raised; or it printed an ``error:`` line (``repro.run`` does for
  a job it rejects: a bad value, a directory holding another run); or it wrote a failed
  ``result.json`` / ``summary.json``;
- **finished**: it wrote a finished ``result.json`` (``summary.json`` for ``task=superglue``);
- **skipped**: it wrote nothing and its directory already held a finished run (``run_experiment``
  returns the stored summary);
- **interrupted**: anything else: it stopped before writing a result (``trainer.stop_after_steps``);
  launching the sweep again resumes it.

A sweep stopped by a preemption signal leaves through ``sys.exit(75)`` inside the job
(``repro.job.preemption.EXIT_REQUEUE``): neither ``on_job_end`` nor ``on_multirun_end`` runs,
and the exit code stays 75. A job that raises an exception (a bug, not a user's mistake) ends
the sweep in Hydra's sweeper with its traceback (exit 1) before ``on_multirun_end``; the records
stay behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro.files import read_json
from repro.tasks import SUPERGLUE

# Exit code of a sweep in which a job failed: 1, as a run that itself failed (`repro.run`).
# Not 2: that code means "fix the command, nothing ran", and a sweep with failed jobs has run
# the others (their results stand); not 75, which asks a scheduler to requeue.
EXIT_FAILED_JOBS = 1
OUTCOMES = ("finished", "failed", "interrupted", "skipped")
RECORDS = ".sweep_jobs"  # <sweep dir>/.sweep_jobs/<sweep id>/<job num>.json
# A job's own outcome file: summary.json for a multi-task job (task=superglue), else result.json.
OUTCOME_FILES = ("summary.json", "result.json")
# Where a job's config holds each axis of the results frame (`repro.collect.AXES`).
AXIS_KEYS = {
    "size": "model.size",
    "params": "model.params",
    "method": "method.name",
    "objective": "objective.name",
    "lm_adapt_steps": "lm_adapt_steps",
    "prompt_len": "prompt_len",
    "init": "init.name",
    "task": "task.name",
    "seed": "seed",
}


def job_axes(dcfg: DictConfig) -> dict[str, Any]:
    """The axes a job's raw config names, for a job rejected before it became a ``Config``:
    ``repro.run`` writes them into the job's failed ``result.json``, so that its row in the
    results frame says which job it was. Each axis is read on its own; one that cannot be read
    (a broken interpolation, a group in place of a value) is left out."""
    axes: dict[str, Any] = {}
    for axis, key in AXIS_KEYS.items():
        try:
            value = OmegaConf.select(dcfg, key, default=None)
        except (OmegaConfBaseException, ValueError, TypeError):
            continue
        if value is None or isinstance(value, (str, int, float)):
            axes[axis] = value
    if axes.get("objective") not in (None, "lm_adapt"):
        axes["lm_adapt_steps"] = None  # as `Config.axes`: steps only apply to LM adaptation
    return axes


class ErrorLines:
    """``sys.stderr`` while a job runs: all text goes through; lines starting ``error: `` are kept."""

    PREFIX = "error: "
    MAX_LINE = 4000  # a progress bar redrawn with \r is one endless line: keep its start only

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lines: list[str] = []
        self._line = ""

    def write(self, text: str) -> int:
        *done, rest = (self._line + text).split("\n")
        self.lines += [x[len(self.PREFIX) :] for x in done if x.startswith(self.PREFIX)]
        self._line = rest[: self.MAX_LINE]
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


Stamps = dict[str, tuple[int, int, int] | None]


def outcome_stamps(run_dir: Path) -> Stamps:
    """Per outcome file, what changes when it is (atomically) rewritten; None: no such file."""
    stamps: Stamps = {}
    for name in OUTCOME_FILES:
        try:
            st = (run_dir / name).stat()
        except OSError:
            stamps[name] = None
        else:
            stamps[name] = (st.st_mtime_ns, st.st_ino, st.st_size)
    return stamps


def _read_status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"status": "failed", "error": f"unreadable {path.name}"}
    return data if isinstance(data, dict) else {"status": "failed", "error": f"bad {path.name}"}


def _one_line(text: Any) -> str:
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    return lines[0] if lines else ""


def _error_of(outcome: dict[str, Any]) -> str:
    """One line from a result.json (`error`) or a summary.json (`errors`: one per task)."""
    errors = outcome.get("errors")
    if isinstance(errors, dict) and errors:
        return "; ".join(f"{task}: {_one_line(e)}" for task, e in errors.items())
    return _one_line(outcome.get("error") or "") or "failed (no error recorded)"


def job_outcome(
    run_dir: Path,
    before: Stamps,
    error_lines: list[str],
    job_return: JobReturn | None = None,
) -> dict[str, str | None]:
    """How one job ended: ``{"status": finished|failed|interrupted|skipped, "error": ...}``.

    Args:
        run_dir: the job's run directory.
        before: :func:`outcome_stamps` of ``run_dir`` when the job started.
        error_lines: the ``error:`` lines the job printed (prefix removed).
        job_return: Hydra's record of the job (status FAILED: its task function raised).
    """
    if job_return is not None and job_return.status == JobStatus.FAILED:
        err = job_return._return_value  # `.return_value` would re-raise it
        return {"status": "failed", "error": f"{type(err).__name__}: {_one_line(err)}"}
    if error_lines:
        return {"status": "failed", "error": error_lines[-1]}
    now = outcome_stamps(run_dir)
    for name in OUTCOME_FILES:
        if now[name] is not None and now[name] != before.get(name):  # written by this job
            outcome = _read_status(run_dir / name)
            status = outcome.get("status")
            if status == "finished":
                return {"status": "finished", "error": None}
            if status == "failed":
                return {"status": "failed", "error": _error_of(outcome)}
            return {"status": "interrupted", "error": f"{name} says {status!r}"}
    for name in OUTCOME_FILES:
        if (run_dir / name).exists():
            if _read_status(run_dir / name).get("status") == "finished":
                return {"status": "skipped", "error": None}
            break
    return {"status": "interrupted", "error": "no result written; launch again to resume"}


class SweepSummary(Callback):
    """Counts a sweep's jobs by outcome, names the failed ones, exits 1 if any failed.

    1, not 2 or 75: 2 says "fix the command, nothing ran", but this sweep ran and its other
    jobs' results stand; 75 asks a scheduler to requeue. 1 is also what a single run exits with
    when the run itself failed. Only in MULTIRUN mode; a single run reports through
    ``repro.run``'s own exit code.
    """

    def __init__(self) -> None:
        self.sweep_id: str | None = None
        self.sweep_dir: str | None = None
        self._stderr: ErrorLines | None = None
        self._before: Stamps = {}

    # --- in the launching process, before any job (pickled with the launcher to submitit jobs)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**9}"
        self.sweep_dir = str(Path(str(config.hydra.sweep.dir)).absolute())

    # --- where the job runs

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self._in_sweep(config):
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        self._before = outcome_stamps(run_dir)
        stream = sys.stderr
        if isinstance(stream, ErrorLines):  # left by a job that ended in sys.exit (preempted)
            stream = stream.stream
        self._stderr = ErrorLines(stream)
        sys.stderr = self._stderr

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self._in_sweep(config) or self._stderr is None:
            return
        if sys.stderr is self._stderr:
            sys.stderr = self._stderr.stream
        run_dir = Path(config.hydra.runtime.output_dir)
        if OmegaConf.select(config, "dry_run", default=False) and not self._stderr.lines:
            outcome = {"status": "dry run", "error": None}  # an estimate: nothing is written
        else:
            outcome = job_outcome(run_dir, self._before, self._stderr.lines, job_return)
        self._stderr = None
        self.record(int(config.hydra.job.num), run_dir, outcome)

    def record(self, job: int, run_dir: Path, outcome: dict[str, Any]) -> None:
        """Leave one job's outcome for ``on_multirun_end`` (the packed launcher calls this for
        each member of a pack, which runs as one Hydra job of its own)."""
        record = {"job": job, "run_dir": str(run_dir), **outcome}
        path = Path(self.sweep_dir) / RECORDS / self.sweep_id / f"{job}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    # --- in the launching process, once every job has returned

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_id is None or self.sweep_dir is None:
            return
        records_dir = Path(self.sweep_dir) / RECORDS / self.sweep_id
        jobs = sorted(
            (_read_status(p) for p in records_dir.glob("*.json")), key=lambda r: r.get("job", 0)
        )
        shutil.rmtree(records_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # removed only when no other sweep's records are in it
            records_dir.parent.rmdir()
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


def next_step(sweep_dir: str, jobs: list[dict[str, Any]]) -> str:
    """Where the frame and the figure come from: the two commands after a sweep (with the
    sweep's tasks named when they are not SuperGLUE's, which the figures assume)."""
    tasks = set()
    for job in jobs:
        run_dir = Path(str(job.get("run_dir", "")))
        result = read_json(run_dir / "result.json") if run_dir.name else None
        if result and result.get("task"):
            tasks.add(result["task"])
    extra = sorted(tasks - set(SUPERGLUE))
    name = Path(sweep_dir).name
    plots = f"python -m repro.plots results/{name}.csv -o results/figures"
    if extra:
        plots += f" --tasks {' '.join(sorted(tasks))}"
    return f"python -m repro.collect {sweep_dir} -o results/{name}.csv && {plots}"


def summary_line(sweep_dir: str, jobs: list[dict[str, Any]]) -> str:
    """``sweep <dir>: 4 jobs: 1 finished, 3 failed, 0 interrupted, 0 skipped`` (+ dry runs)."""
    counts = {status: sum(j.get("status") == status for j in jobs) for status in OUTCOMES}
    parts = [f"{n} {status}" for status, n in counts.items()]
    dry = sum(j.get("status") == "dry run" for j in jobs)
    if dry:
        parts.append(f"{dry} dry run")
    return f"sweep {sweep_dir}: {len(jobs)} job{'s' * (len(jobs) != 1)}: {', '.join(parts)}"
