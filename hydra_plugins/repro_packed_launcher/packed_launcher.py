"""``hydra/launcher=packed``: a sweep's jobs that share a backbone train in one process, packed.

    python -m repro.run -m hydra/launcher=packed experiment=smoke prompt_len=1,5,20 seed=0,1

The launcher composes every job's config as Hydra's basic launcher does, groups them with
:func:`repro.pack.plan.plan_packs` (equal :func:`repro.pack.plan.pack_key`: same model, objective,
LM-adaptation steps, task, batch shape ...; split by the memory model of :mod:`repro.estimate`),
prints the grouping, and runs each pack in this process with :func:`repro.pack.job.run_pack`. Every
member keeps its own run directory, and ``repro.sweep.SweepSummary`` counts it as a job of its
own. ``dry_run=true`` prints the grouping and each pack's estimate, and trains nothing.

Hydra finds launchers only in the ``hydra_plugins`` namespace package; this one ships with the
project (pyproject.toml) and is selected by name, so without ``hydra/launcher=packed`` nothing
changes. Details: docs/packing.md. Hydra imports every plugin module when it starts (in any Hydra
app of this environment, whatever its launcher), so this one imports ``repro`` (and with it
torch) only inside the launcher's methods.
"""

import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.repro_packed_launcher.packed_launcher.PackedLauncher"
    # Memory per pack in GB, > 0 (None: each job's GPU memory, cost.memory_gb: cost.gpu_memory_gb,
    # else cost.gpu's in repro.gpus); a group that does not fit is split
    # (repro.pack.plan.pack_memory, repro.estimate's memory model).
    memory_gb: float | None = None
    # At most this many members per pack, >= 1 (None: as many as fit).
    max_members: int | None = None
    # Packs of one prompt length each (a member pays for its pack's longest prompt): true,
    # false, or None = auto: by length when the jobs train on the CPU (repro.pack.plan.packs_by_length).
    by_length: bool | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="repro"
)


class PackedLauncher(Launcher):
    def __init__(
        self,
        memory_gb: float | None = None,
        max_members: int | None = None,
        by_length: bool | None = None,
    ) -> None:
        super().__init__()
        self.memory_gb = memory_gb
        self.max_members = max_members
        self.by_length = by_length
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # -- one job's config and directory, as run_job would make them -----------------------
    def _job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, list(overrides)
        )
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        out = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = str(out.absolute())
        return sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from repro import rundir
        from repro.cli import USER_ERRORS, cli_error_message
        from repro.cost.report import describe
        from repro.estimate import estimate
        from repro.job.preemption import preemption_signals
        from repro.pack.job import PackJob, run_pack
        from repro.pack.plan import describe_packs, packs_by_length, plan_packs
        from repro.resolve import load_config
        from repro.run import hydra_record
        from repro.sweep import (
            SweepStopFlag,
            SweepSummary,
            job_outcome,
            outcome_stamps,
            summary_line,
        )
        from repro.trainer import StopFlag

        check_options(self.memory_gb, self.max_members)  # before any job is composed
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        summary = next(
            (c for c in self.hydra_context.callbacks.callbacks if isinstance(c, SweepSummary)),
            None,
        )
        returns: list[JobReturn] = []
        outcomes: list[dict] = []  # how each job ended, for the line of a preempted sweep
        jobs: list[tuple[int, DictConfig, Any]] = []  # (job num, Hydra config, Config)

        def done(num: int, sweep_config: DictConfig, outcome: dict, value: Any = None) -> None:
            run_dir = Path(sweep_config.hydra.runtime.output_dir)
            outcomes.append(outcome)
            if summary is not None and summary.sweep_id is not None:
                summary.record(num, run_dir, outcome)
            status = JobStatus.COMPLETED
            if isinstance(value, BaseException):
                status = JobStatus.FAILED
            returns.append(
                JobReturn(
                    overrides=list(sweep_config.hydra.overrides.task),
                    cfg=sweep_config,
                    hydra_cfg=sweep_config,
                    working_dir=os.getcwd(),
                    task_name=sweep_config.hydra.job.name,
                    status=status,
                    _return_value=value,
                )
            )

        for k, overrides in enumerate(job_overrides):
            num = initial_job_idx + k
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self._job_config(overrides, num)
            try:
                cfg = load_config(sweep_config)
            except USER_ERRORS as err:
                message = cli_error_message(err)
                print(f"error: {message}", file=sys.stderr)
                _write_rejected(sweep_config, err)
                done(num, sweep_config, {"status": "failed", "error": message})
                continue
            jobs.append((num, sweep_config, cfg))
        if summary is not None and summary.stop_reason() is not None:
            summary.end_stopped()  # Ctrl-C while the jobs were composed: start no pack
        if not jobs:
            return returns
        cfgs = [cfg for _, _, cfg in jobs]
        by_length = packs_by_length(cfgs, self.by_length)
        packs = plan_packs(cfgs, self.memory_gb, self.max_members, by_length)
        print(describe_packs(cfgs, packs, by_length), flush=True)
        if any(cfg.dry_run for cfg in cfgs):  # the grouping and the estimates only
            for num, sweep_config, cfg in jobs:
                print(describe(estimate(cfg)))
                done(num, sweep_config, {"status": "dry run", "error": None})
            return returns

        # also set once the sweep is stopping (Ctrl-C before this batch started: repro.sweep)
        stop = SweepStopFlag(summary) if summary is not None else StopFlag()
        # One handler for the whole loop, the reporting included: a signal between two packs,
        # or while a pack's members are counted, stops the sweep too (exit 75) instead of
        # killing the process with the checkpoints written but no requeue code.
        with preemption_signals(stop) as preemption:
            for pack in packs:
                members = [jobs[i] for i in pack]
                before = {
                    num: outcome_stamps(Path(sc.hydra.runtime.output_dir)) for num, sc, _ in members
                }
                pack_jobs = [
                    PackJob(
                        cfg,
                        Path(sc.hydra.runtime.output_dir),
                        choices=dict(sc.hydra.runtime.choices),
                        hydra_files=hydra_record(sc, sc.hydra),
                    )
                    for _, sc, cfg in members
                ]
                failure: BaseException | None = None
                try:
                    run_pack(pack_jobs, stop)
                except USER_ERRORS as err:  # what the pack shares is wrong: every member fails
                    failure = err
                    print(f"error: {cli_error_message(err)}", file=sys.stderr)
                    for (_, sc, cfg), job in zip(members, pack_jobs, strict=True):
                        if not any(
                            (job.run_dir / f).exists() for f in (rundir.RESULT, rundir.FINGERPRINT)
                        ):
                            _write_rejected(sc, err, cfg)
                except Exception as err:  # a bug: each member fails with it, the sweep goes on
                    log.exception("pack failed")
                    failure = err
                for (num, sc, _), job in zip(members, pack_jobs, strict=True):
                    errors = []
                    if job.error is not None:
                        errors = [cli_error_message(job.error) or str(job.error)]
                        print(f"error: {errors[0]}", file=sys.stderr)
                    elif failure is not None and isinstance(failure, USER_ERRORS):
                        errors = [cli_error_message(failure) or str(failure)]
                    ret = None
                    if failure is not None and not isinstance(failure, USER_ERRORS):
                        ret = JobReturn(status=JobStatus.FAILED, _return_value=failure)
                    outcome = job_outcome(job.run_dir, before[num], errors, ret)
                    result = job.summary or {}
                    if result:
                        scores = result.get("scores") or {result.get("task"): result.get("score")}
                        skipped = " (already finished: skipped)" if result.get("skipped") else ""
                        print(f"{job.run_dir}: {result['status']}{skipped}  scores={scores}")
                    done(num, sc, outcome, failure if ret is not None else None)
                if preemption.signum == signal.SIGINT and summary is not None:
                    # Ctrl-C: every running member checkpointed last/, no other pack starts;
                    # one line (the members not started counted as such) and exit 130
                    summary.request_stop("Ctrl-C")
                    summary.end_stopped()
                if preemption.signum is not None:
                    # Every running member checkpointed last/: requeue (submitit) or exit for
                    # SLURM. on_multirun_end will not run, so the count is said here; the jobs
                    # of packs not started yet are interrupted too.
                    left = [{"status": "interrupted"}] * (len(job_overrides) - len(outcomes))
                    sweep_dir = str(Path(str(self.config.hydra.sweep.dir)).absolute())
                    print(summary_line(sweep_dir, outcomes + left), file=sys.stderr)
                    print(
                        f"packed sweep stopped: {stop.reason}; run again to resume", file=sys.stderr
                    )
                    preemption.forward()
                    sys.exit(preemption.exit_code)
        return returns


def check_options(memory_gb: float | None, max_members: int | None) -> None:
    """Refuse launcher options that mean nothing, instead of packing nothing: a pack of at most
    0 members, or a memory budget of 0 GB or less (each job became a pack of one, silently).
    None keeps its meaning: each job's GPU memory; as many members as fit.

    Raises:
        ValueError: one line naming the key, the value and what is allowed.
    """
    if memory_gb is not None and not (math.isfinite(memory_gb) and memory_gb > 0):
        raise ValueError(
            f"hydra.launcher.memory_gb must be a finite number of GB > 0 (or null: each job's "
            f"GPU memory, cost.memory_gb); got {memory_gb!r}"
        )
    if max_members is not None and (isinstance(max_members, bool) or max_members < 1):
        raise ValueError(
            "hydra.launcher.max_members must be an integer >= 1 (or null: as many as fit); "
            f"got {max_members!r}"
        )


def _write_rejected(sweep_config: DictConfig, err: BaseException, cfg=None) -> None:
    """A failed ``result.json`` for a job refused before it started, as ``repro.run`` writes
    one in a sweep, so that its row in the results frame says which job it was."""
    from repro.files import write_json_atomic
    from repro.job.task import failed_result
    from repro.rundir import RunDirError
    from repro.sweep import job_axes

    if isinstance(err, RunDirError):
        return  # a directory holding another run (or in use) is never touched
    run_dir = Path(sweep_config.hydra.runtime.output_dir)
    if (run_dir / "result.json").exists() or (run_dir / "fingerprint.json").exists():
        return
    task = OmegaConf.select(sweep_config, "task.name", default="?")
    result = failed_result(cfg, task, run_dir, err)
    if cfg is None:
        result.update(job_axes(sweep_config))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "result.json", result)
