"""How one job of a sweep ended, read from what it wrote, and the lines that say so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro.files import read_json
from repro.tasks import SUPERGLUE

# Exit code of a sweep in which a job failed: 1, as a run that itself failed (`repro.run`).
# Not 2: that code means "fix the command, nothing ran", and a sweep with failed jobs has run
# the others (their results stand); not 75, which asks a scheduler to requeue.
EXIT_FAILED_JOBS = 1
OUTCOMES = ("finished", "failed", "interrupted", "skipped")
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


def read_status(path: Path) -> dict[str, Any]:
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
            outcome = read_status(run_dir / name)
            status = outcome.get("status")
            if status == "finished":
                return {"status": "finished", "error": None}
            if status == "failed":
                return {"status": "failed", "error": _error_of(outcome)}
            return {"status": "interrupted", "error": f"{name} says {status!r}"}
    for name in OUTCOME_FILES:
        if (run_dir / name).exists():
            if read_status(run_dir / name).get("status") == "finished":
                return {"status": "skipped", "error": None}
            break
    return {"status": "interrupted", "error": "no result written; launch again to resume"}


def outcome_line(record: dict[str, Any]) -> str:
    """``<run dir>: finished  score=58.0`` — one job's end, as the launching process prints it."""
    line = f"{record.get('run_dir')}: {record.get('status')}"
    if record.get("status") in ("finished", "skipped"):
        run_dir = Path(str(record.get("run_dir")))
        result = read_json(run_dir / "summary.json") or read_json(run_dir / "result.json") or {}
        score = result.get("superglue_score", result.get("score"))
        if score is not None:
            line += f"  score={score}"
    elif record.get("error"):
        line += f": {record['error']}"
    return line


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
    """``sweep <dir>: 4 jobs: 1 finished, 3 failed, 0 interrupted, 0 skipped`` (+ not started,
    dry run)."""
    counts = {status: sum(j.get("status") == status for j in jobs) for status in OUTCOMES}
    parts = [f"{n} {status}" for status, n in counts.items()]
    for extra in ("not started", "dry run"):  # named only when there are some
        if n := sum(j.get("status") == extra for j in jobs):
            parts.append(f"{n} {extra}")
    return f"sweep {sweep_dir}: {len(jobs)} job{'s' * (len(jobs) != 1)}: {', '.join(parts)}"
