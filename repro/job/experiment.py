"""One job in its run directory: :func:`run_experiment`.

The directory's rules — lock, identity, claim, resume, atomic writes — are :mod:`repro.rundir`'s;
this is the order a job follows them in: refuse what cannot run before touching anything (the
tasks, the checkpoint, the device), skip a finished run, log the memory plan, load the model,
claim the directory, train the tasks one after the other (each in ``<run_dir>/<task>/`` when
there are several) or as one mixture, and end with the job's summary. A read-only directory is
only read: a finished run there is skipped, any other refused. The packed launcher
(:mod:`repro.pack`) runs its members through the same steps.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from repro import files, rundir
from repro.checkpoints import checkpoint_for
from repro.config import Config
from repro.files import read_json, write_json_atomic
from repro.job.assets import load_model, log_memory_plan, prepare_assets
from repro.job.task import failed_result, run_precision, train_mixture, train_task
from repro.methods import check_tasks, get_method
from repro.numerics import cpu_numerics_mode
from repro.tasks import MIXTURES, SUPERGLUE, superglue_score, task_names
from repro.tracking import ScopedSink, build_sink
from repro.trainer import Interrupted, StopFlag

# The logger its lines have always carried (``[repro.run]``).
log = logging.getLogger("repro.run")


def run_experiment(
    cfg: Config,
    run_dir: Path,
    *,
    choices: dict[str, str] | None = None,
    stop: StopFlag | None = None,
    hydra_files: dict[str, str] | None = None,
) -> dict:
    """Run every task of one job in ``run_dir``; returns the job summary.

    The directory's rules — lock, identity, claim, resume, atomic writes — are
    :mod:`repro.rundir`'s. Status "interrupted" (no result.json written) when ``stop`` was set
    or the session's step budget ran out: launching the same job again resumes it. A finished
    run is not run again (``"skipped": True`` in the returned summary).

    Args:
        hydra_files: Hydra's record of the command (``config.yaml``, ``hydra.yaml``,
            ``overrides.yaml``), written to ``.hydra/`` when the job claims the directory.
    """
    names = task_names(cfg.task.name)
    check_tasks(cfg.method.name, cfg.task.name, names, MIXTURES)
    checkpoint = checkpoint_for(cfg)
    precision = run_precision(cfg)  # a device this machine lacks: refused before loading
    cpu_numerics_mode()  # a bad REPRO_CPU_NUMERICS: refused before loading (repro.numerics)
    prepare_assets(cfg, names)  # generated assets go to the cache, never into a given dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.locked(run_dir) as writable:
        mine = rundir.fingerprint(cfg, names, precision)
        status = rundir.status_of(run_dir, mine)
        if status == "finished":
            # Not logged: the log file is the run's (run.log), and a finished run's files stay
            # as they are (on a read-only mount too); the entry point says "skipped".
            done = read_json(run_dir / rundir.SUMMARY) or read_json(run_dir / rundir.RESULT)
            return {**done, "skipped": True}
        rundir.check_writable(run_dir, writable, status)
        log_memory_plan(cfg)  # once the directory is ours (a refused job writes nothing there)
        summary = run_tasks(cfg, names, checkpoint, run_dir, mine, choices, stop, hydra_files)
        if summary["status"] == "failed" and rundir.release_if_unstarted(run_dir):
            log.info("%s: no task took a training step; the directory is not claimed", run_dir)
        return summary


def open_sink(cfg: Config, run_dir: Path, choices: dict[str, str] | None):
    """The job's tracking sink (W&B run or the null sink)."""
    tags = [f"{k}={v}" for k, v in cfg.axes.items() if v is not None and k != "params"]
    return build_sink(
        cfg.logger,
        name=cfg.name,
        group=cfg.sweep_name,
        config={**cfg.axes, "config": dataclasses.asdict(cfg), "choices": choices or {}},
        run_dir=run_dir,
        tags=tags,
    )


def task_dir(run_dir: Path, names, name: str) -> Path:
    """Where one task of a job trains: the run dir, or ``<run_dir>/<task>`` for several."""
    return run_dir if len(names) == 1 else run_dir / name


def run_tasks(cfg, names, checkpoint, run_dir, fp, choices, stop, hydra_files) -> dict:
    """Load the model, claim the locked ``run_dir`` (fingerprint ``fp``), train the job's
    tasks; returns the job's summary."""
    tokenizer, backbone = load_model(cfg, checkpoint)
    sink = open_sink(cfg, run_dir, choices)
    # Claimed only once the job can start: a job that failed to load (or to start its W&B run)
    # leaves no fingerprint, so running it again with the mistake fixed is not refused.
    rundir.claim(run_dir, fp, OmegaConf.to_yaml(OmegaConf.structured(cfg)), hydra_files)
    if get_method(cfg.method.name).mixture:
        results, interrupted = _run_mixture(
            cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop
        )
    else:
        results, interrupted = _run_each(
            cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop
        )
    return finish_job(cfg, names, results, interrupted, run_dir, sink)


def task_failed(cfg: Config, name: str, out_dir: Path, err: BaseException) -> dict:
    """Record a task's failure (``error.txt`` with the traceback); returns its result."""
    files.write_text_atomic(out_dir / rundir.ERROR, traceback.format_exc())
    return failed_result(cfg, name, out_dir, err)


def finish_job(cfg: Config, names, results, interrupted: str | None, run_dir: Path, sink) -> dict:
    """The job's summary (``summary.json`` for several tasks) and the end of its W&B run."""
    if interrupted:
        sink.finish(failed=False)
        return {"status": "interrupted", "error": interrupted, **cfg.axes, "run_dir": str(run_dir)}
    summary = summarise(cfg, results, run_dir)
    if len(names) > 1:
        write_json_atomic(run_dir / rundir.SUMMARY, summary)
        if summary["status"] == "finished":
            rundir.clear_error(run_dir)
    # A multi-task job is one W&B run: its summary carries every task's result, so that
    # `collect --wandb` gives the same rows per task as the local run directories.
    sink.summary({**summary, "results": results} if len(names) > 1 else results[names[0]])
    sink.finish(failed=summary["status"] != "finished")
    return summary


def _run_each(cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop):
    """The job's tasks one after the other, each in its own directory (``run_dir`` itself for
    a single task); returns ({task: result}, why it stopped early or None)."""
    # Model tuning changes the backbone: every task starts from the loaded weights again.
    pristine = None
    if get_method(cfg.method.name).trains == "backbone" and len(names) > 1:
        pristine = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    results, interrupted = {}, None
    for name in names:
        out_dir = task_dir(run_dir, names, name)
        out_dir.mkdir(parents=True, exist_ok=True)
        done = read_json(out_dir / rundir.RESULT)
        if done and done.get("status") == "finished":
            results[name] = done
            continue
        if stop is not None and stop.reason:  # a signal came between tasks: start no new one
            interrupted = f"stopped before task {name} ({stop.reason}); run again to resume"
            break
        try:
            task_sink = sink if len(names) == 1 else ScopedSink(sink, name)
            if pristine is not None:
                backbone.load_state_dict(pristine)
            result = train_task(
                cfg, name, backbone, tokenizer, checkpoint, out_dir, task_sink, stop
            )
            rundir.clear_error(out_dir)
        except Interrupted as err:  # state is in last/; no result.json until the run ends
            log.warning("task %s: %s", name, err)
            interrupted = str(err)
            break
        except Exception as err:  # one task failing must not stop the others
            log.error("task %s failed: %s", name, err)
            result = task_failed(cfg, name, out_dir, err)
        write_json_atomic(out_dir / rundir.RESULT, result)
        results[name] = result
    return results, interrupted


def _run_mixture(cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop):
    """The job's tasks as one mixture (``train_mixture``): one model in ``run_dir``, then a
    result.json per task in ``run_dir/<task>/``; returns ({task: result}, why it stopped early
    or None)."""
    done = {name: read_json(run_dir / name / rundir.RESULT) for name in names}
    if all(r and r.get("status") == "finished" for r in done.values()):
        return done, None
    if stop is not None and stop.reason:
        return {}, f"stopped before the mixture ({stop.reason}); run again to resume"
    try:
        results = train_mixture(cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop)
        rundir.clear_error(run_dir)
    except Interrupted as err:  # state is in last/; no result.json until the run ends
        log.warning("mixture %s: %s", cfg.task.name, err)
        return {}, str(err)
    except Exception as err:  # every task of the mixture failed with it
        log.error("mixture %s failed: %s", cfg.task.name, err)
        files.write_text_atomic(run_dir / rundir.ERROR, traceback.format_exc())
        results = {name: failed_result(cfg, name, run_dir / name, err) for name in names}
    for name, result in results.items():
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / name / rundir.RESULT, result)
    return results, None


def summarise(cfg: Config, results: dict[str, dict], run_dir: Path) -> dict[str, Any]:
    status = "finished" if all(r["status"] == "finished" for r in results.values()) else "failed"
    scores = {name: r.get("score") for name, r in results.items()}
    summary = {"status": status, **cfg.axes, "scores": scores, "run_dir": str(run_dir)}
    if status != "finished":
        summary["errors"] = {name: r.get("error") for name, r in results.items() if r.get("error")}
        summary["user_error"] = all(r.get("user_error") for r in results.values() if r.get("error"))
    if set(results) == set(SUPERGLUE) and status == "finished":
        summary["superglue_score"] = superglue_score(scores)
    return summary
