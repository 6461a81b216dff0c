"""The only Hydra entry: ``python -m repro.run [overrides]`` (``-m`` for a sweep).

One job = one run directory = one prompt per task (``task=superglue`` trains the 8 SuperGLUE
prompts one after the other in ``<run_dir>/<task>/``). The flow:

    config ─► checkpoint ─► frozen backbone + tokenizer ─► per task: examples → tokens →
    prompt init → train (eval every N, keep best) → result.json

This module turns Hydra's config into a job and the job's end into an exit code and one line;
what the job does is :mod:`repro.job` (:func:`repro.job.experiment.run_experiment`), how a
preemption signal stops it :mod:`repro.job.preemption`, what ``dry_run=true`` prints
:mod:`repro.cost.report` and :mod:`repro.pack.plan`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from repro import rundir
from repro.cli import USER_ERRORS, cli_error_message
from repro.config import CONF_DIR, Config, register_configs
from repro.cost.report import describe
from repro.estimate import estimate
from repro.files import write_json_atomic
from repro.job.experiment import run_experiment
from repro.job.preemption import EXIT_INTERRUPT, preemption_signals
from repro.job.task import failed_result
from repro.methods import check_method_overrides
from repro.pack.plan import describe_fit
from repro.resolve import load_config, lora_rank_warning
from repro.sweep import job_axes, job_stop_flag, stop_sweep
from repro.trainer import StopFlag

register_configs()


def spread_over_local_gpus(cfg: Config, job_num: int | None) -> None:
    """Under ``hydra/launcher=local`` every job sees all N GPUs: job i takes GPU i mod N, so a
    batch of N jobs (``hydra.sweeper.max_batch_size=N``) fills the box, one job per GPU."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or job_num is None:
        return
    if cfg.trainer.device != "auto" or cfg.model.device_map is not None:
        return  # the user placed the job
    count = torch.cuda.device_count()
    if count > 1:
        torch.cuda.set_device(int(job_num) % count)


def hydra_record(dcfg: DictConfig, hydra_cfg) -> dict[str, str]:
    """What Hydra itself would write to ``.hydra/`` (``hydra.output_subdir`` is off in
    conf/config.yaml, so that a refused relaunch rewrites nothing): written when the job claims
    its directory (:func:`repro.rundir.claim`)."""
    return {
        "config.yaml": OmegaConf.to_yaml(dcfg),
        "hydra.yaml": OmegaConf.to_yaml({"hydra": OmegaConf.to_container(hydra_cfg)}),
        "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task)),
    }


# An absolute path: the same conf/ whether run as ``python -m repro.run`` or called in-process.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    cfg = None
    # in a sweep, the flag is also set once the sweep is stopping (Ctrl-C): repro.sweep
    stop = job_stop_flag() if multirun else StopFlag()
    try:
        cfg = load_config(dcfg)
        check_method_overrides(cfg.method.name, hydra_cfg.overrides.task)
        if cfg.dry_run:  # the estimate only: nothing is loaded, nothing is written
            print(describe(estimate(cfg)))
            print(describe_fit(cfg))
            if rank := lora_rank_warning(cfg):
                print(f"warning: {rank}")
            if not multirun:  # a sweep's dry run removes its jobs' directories (repro.sweep)
                _drop_if_empty(run_dir)
            return None
        if multirun:
            spread_over_local_gpus(cfg, hydra_cfg.job.get("num"))
        with preemption_signals(stop) as preemption:
            summary = run_experiment(
                cfg,
                run_dir,
                choices=dict(hydra_cfg.runtime.choices),
                stop=stop,
                hydra_files=hydra_record(dcfg, hydra_cfg),
            )
            if preemption.signum == signal.SIGINT and multirun:
                # Ctrl-C stops the whole sweep: every running job checkpoints, none starts, and
                # the launching process says how they stand (exit 130); this job reports as usual
                stop_sweep("Ctrl-C")
            elif preemption.signum is not None and summary["status"] == "interrupted":
                # last/ is on disk: let the launcher requeue (submitit), else exit so SLURM can
                print(f"{run_dir}: {summary['error']}", file=sys.stderr)
                preemption.forward()
                sys.exit(preemption.exit_code)
            elif (
                preemption.signum is not None
                and multirun
                and not os.environ.get("SUBMITIT_EXECUTOR")
            ):
                # The signal came as this job ended: stop the in-process sweep before the next
                # job starts (under submitit every job is its own process and this one is done).
                print(f"{run_dir}: {summary['status']}; {preemption.stop.reason}: sweep stopped")
                sys.exit(preemption.exit_code)
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        if multirun:  # the other jobs of the sweep go on; a dir holding a run is never touched
            mine = not isinstance(err, rundir.RunDirError)  # (in use, or another config's)
            if mine and not any(
                (run_dir / f).exists() for f in ("result.json", "fingerprint.json")
            ):
                task = OmegaConf.select(dcfg, "task.name", default="?")
                result = failed_result(cfg, task, run_dir, err)
                if cfg is None:  # rejected by load_config: keep the axes the command gave
                    result.update(job_axes(dcfg))
                write_json_atomic(run_dir / "result.json", result)
            return None
        if not isinstance(err, rundir.RunDirError):
            _drop_if_empty(run_dir)  # refused before anything was written: leave no trace
        sys.exit(2)
    scores = summary.get("scores") or {summary.get("task"): summary.get("score")}
    skipped = " (already finished: skipped)" if summary.get("skipped") else ""
    print(f"{run_dir}: {summary['status']}{skipped}  scores={scores}")
    if summary["status"] == "interrupted":
        print(f"{run_dir}: {summary['error']}", file=sys.stderr)
    elif summary["status"] != "finished" and not multirun:
        # once each: a mixture's tasks all fail with the mixture's one error
        errors = list(dict.fromkeys(e for e in (summary.get("errors") or {}).values() if e))
        for error in errors:  # "ValueError: task 'rte': ..." → "error: task 'rte': ..."
            print(f"error: {error.partition(': ')[2] or error}", file=sys.stderr)
        user = errors and summary.get("user_error")
        sys.exit(2 if user else 1)  # 2: fix the input; 1: the run itself failed
    return summary.get("superglue_score")


def _drop_if_empty(run_dir: Path) -> None:
    """Remove the directory Hydra made for a job that wrote nothing into it (a refused value, a
    dry run); a directory holding anything is left as it is."""
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def cli() -> None:
    """``python -m repro.run``: Hydra's entry, with Hydra's own errors (unknown option, bad
    override) reported like ours: one ``error:`` line, exit code 2, no traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for full tracebacks
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; we format
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C twice: the first one's checkpoint may not be written
        print("error: interrupted twice: stopped at once", file=sys.stderr)
        sys.exit(EXIT_INTERRUPT)
    except Exception as err:
        message = cli_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    cli()
