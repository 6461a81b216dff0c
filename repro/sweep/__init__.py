"""What a sweep says when it ends: how its jobs ended, which failed and why, and an exit code.

``python -m repro.run -m ...`` goes on past a failing job (one bad value must not cost the other
runs), so without this a sweep whose every job failed exits 0. :class:`SweepSummary` is a Hydra
callback (registered in ``conf/config.yaml: hydra.callbacks``); a sweep ends with::

    sweep multirun/smoke: 4 jobs: 1 finished, 3 failed, 0 interrupted, 0 skipped
    3 of 4 jobs failed:
      multirun/smoke/rte-tiny-...-s0: ValueError: task 'rte': cannot load split 'train' ...
      multirun/smoke/toy_keyword-tiny-...-p0-...: prompt_len must be an integer >= 1; got 0
      ...

on stderr and exit code 1 (:data:`EXIT_FAILED_JOBS`), or with the first line alone, on stdout,
and exit code 0 (the directories are printed absolute).

Where each part runs: ``on_job_start``/``on_job_end`` run where the job runs (in the sweep's
process under the basic and packed launchers, in the job's own process under
hydra-submitit-launcher); ``on_multirun_start``/``on_multirun_end`` run in the launching process.
So each job sorts its own outcome — only it can tell a finished run it skipped from a finished
run it refused to touch (another config in its directory) — and leaves a record: in memory when
it runs in the launching process, else in ``<sweep dir>/.sweep_jobs/<sweep id>/<job num>.json``,
which the launching process reads and removes. The sweep id keeps an earlier sweep into the same
directory (``multirun/<sweep_name>``) out of the count.

How a job is counted (:func:`job_outcome`):

- **failed**: its task function raised; or it printed an ``error:`` line (``repro.run`` does for
  a job it rejects: a bad value, a directory holding another run); or it wrote a failed
  ``result.json`` / ``summary.json``;
- **finished**: it wrote a finished ``result.json`` (``summary.json`` for ``task=superglue``);
- **skipped**: it wrote nothing and its directory already held a finished run (``run_experiment``
  returns the stored summary);
- **interrupted**: anything else: it stopped before writing a result (``trainer.stop_after_steps``,
  Ctrl-C); launching the sweep again resumes it.

**Ctrl-C stops the whole sweep** (:meth:`SweepSummary.request_stop`): every running job checkpoints
``last/`` at its next step, no other job starts, and the launching process prints one line
(``sweep multirun/toy: stopped by Ctrl-C: 8 jobs: 3 finished, 0 failed, 2 interrupted, 0 skipped,
3 not started; relaunch the same command to resume``) and exits 130. A sweep stopped by a
preemption signal (SIGTERM, SIGUSR1, SIGUSR2) under the basic launcher leaves through
``sys.exit(75)`` inside the job (``repro.job.preemption.EXIT_REQUEUE``) with no summary, so the
code stays 75; under submitit the job is requeued. A job that raises an exception (a bug, not a
user's mistake) ends the sweep in Hydra's sweeper with its traceback (exit 1) before
``on_multirun_end``.
"""

from repro.sweep.outcome import (
    AXIS_KEYS,
    EXIT_FAILED_JOBS,
    OUTCOME_FILES,
    OUTCOMES,
    ErrorLines,
    job_axes,
    job_outcome,
    next_step,
    outcome_line,
    outcome_stamps,
    summary_line,
)
from repro.sweep.summary import (
    RECORDS,
    STOP,
    DryRun,
    SweepStopFlag,
    SweepSummary,
    job_stop_flag,
    planned_jobs,
    stop_sweep,
)

__all__ = [
    "AXIS_KEYS",
    "EXIT_FAILED_JOBS",
    "OUTCOMES",
    "OUTCOME_FILES",
    "RECORDS",
    "STOP",
    "DryRun",
    "ErrorLines",
    "SweepStopFlag",
    "SweepSummary",
    "job_axes",
    "job_outcome",
    "job_stop_flag",
    "next_step",
    "outcome_line",
    "outcome_stamps",
    "planned_jobs",
    "stop_sweep",
    "summary_line",
]
