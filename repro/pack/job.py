"""One pack of jobs, run as :func:`repro.job.experiment.run_experiment` runs one job: lock,
identity, skip a finished member, claim, train, ``result.json`` — with one backbone and the
packed loop of :mod:`repro.packed_trainer`. A pack of one (a method that trains the backbone)
takes the solo path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from repro import files, rundir
from repro.backbone import checkpoint_config
from repro.checkpoints import checkpoint_for
from repro.cli import RunError
from repro.config import Config
from repro.family import CAUSAL, family_of
from repro.job.assets import load_model, log_memory_plan, prepare_assets
from repro.job.experiment import finish_job, open_sink, run_tasks, task_dir, task_failed
from repro.job.task import (
    initial_prompt,
    prepare_task,
    run_precision,
    save_initial_prompt,
    task_result,
)
from repro.memory import describe_grad_accum
from repro.model import PromptedT5
from repro.pack.plan import pack_key, pack_memory, packs_prompts
from repro.packed_trainer import Member, PackedT5, evaluate_members, train_pack
from repro.precision import resolve_precision
from repro.prompts import SoftPrompt
from repro.tasks import task_names
from repro.tracking import ScopedSink
from repro.trainer import Interrupted, StopFlag, resolve_device

# The logger its lines have always carried (``[repro.pack]``).
log = logging.getLogger("repro.pack")


@dataclass
class PackJob:
    """One member job of a pack: its config and where it runs (as a solo job would)."""

    cfg: Config
    run_dir: Path
    choices: dict[str, str] | None = None
    hydra_files: dict[str, str] | None = None
    summary: dict[str, Any] | None = None  # how it ended (run_experiment's summary)
    error: BaseException | None = None  # refused before it started (RunDirError, ...)


def run_pack(jobs: Sequence[PackJob], stop: StopFlag | None = None) -> Sequence[PackJob]:
    """Run the jobs of one pack (equal :func:`pack_key`) as :func:`repro.job.experiment.run_experiment`
    runs one: lock, identity, skip a finished one, claim, train, ``result.json`` — with one
    backbone and a packed loop. Each job's outcome is left on it (``summary`` or ``error``).

    A job refused at its directory (in use, another config's) gets ``error`` and the others go
    on; a failure of what they share (the checkpoint, the data) raises for the pack.
    """
    first = jobs[0].cfg
    keys = {pack_key(j.cfg) for j in jobs}
    if len(keys) != 1:
        raise ValueError("run_pack: the jobs differ in more than their prompts (pack_key)")
    names = task_names(first.task.name)
    checkpoint = checkpoint_for(first)
    precision = run_precision(first)  # a device this machine lacks: refused before loading
    prepare_assets(first, names)
    with contextlib.ExitStack() as locks:
        live = []
        for job in jobs:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                writable = locks.enter_context(rundir.locked(job.run_dir))
                fp = rundir.fingerprint(job.cfg, names, precision)
                status = rundir.status_of(job.run_dir, fp)
                if status == "finished":
                    log.info("%s already holds this finished run: skipped", job.run_dir)
                    done = files.read_json(job.run_dir / rundir.SUMMARY) or files.read_json(
                        job.run_dir / rundir.RESULT
                    )
                    job.summary = {**done, "skipped": True}
                    continue
                rundir.check_writable(job.run_dir, writable, status)
            except rundir.RunDirError as err:
                job.error = err
                continue
            live.append((job, fp))
        if live and packs_prompts(first):  # the members that run (not refused, not done)
            log_pack_memory([job.cfg for job, _ in live])
        if live and not packs_prompts(first):  # a pack of one (pack_key): the solo path
            log_memory_plan(first)

            job, fp = live[0]
            job.summary = run_tasks(
                job.cfg, names, checkpoint, job.run_dir, fp, job.choices, stop, job.hydra_files
            )
        elif live:
            _run_live_pack(live, names, checkpoint, stop)
        for job, _ in live:
            if job.summary["status"] == "failed" and rundir.release_if_unstarted(job.run_dir):
                log.info(
                    "%s: no task took a training step; the directory is not claimed", job.run_dir
                )
    return jobs


def _run_live_pack(live, names, checkpoint, stop) -> None:
    cfg = live[0][0].cfg
    config, _, _ = checkpoint_config(checkpoint, cfg.model.trust_remote_code)
    if family_of(config) == CAUSAL:
        raise RunError(
            f"{checkpoint} is a causal LM: packing puts several prompts in one T5 batch "
            "(repro.packed_trainer.PackedT5, encoder rows per prompt) and has no causal "
            "version; set model.family=causal (its jobs then run one by one) or drop the packed "
            "launcher"
        )
    tokenizer, backbone = load_model(cfg, checkpoint)
    sinks = []
    for job, fp in live:
        sinks.append(open_sink(job.cfg, job.run_dir, job.choices))
        yaml = OmegaConf.to_yaml(OmegaConf.structured(job.cfg))
        rundir.claim(job.run_dir, fp, yaml, job.hydra_files)
    results: list[dict[str, dict]] = [{} for _ in live]
    interrupted: list[str | None] = [None] * len(live)
    for name in names:
        todo = []
        for k, (job, _) in enumerate(live):
            out_dir = task_dir(job.run_dir, names, name)
            out_dir.mkdir(parents=True, exist_ok=True)
            done = files.read_json(out_dir / rundir.RESULT)
            if interrupted[k]:
                continue
            if done and done.get("status") == "finished":
                results[k][name] = done
            elif stop is not None and stop.reason:
                interrupted[k] = f"stopped before task {name} ({stop.reason}); run again to resume"
            else:
                todo.append(k)
        if not todo:
            continue
        sink_of = {k: sinks[k] if len(names) == 1 else ScopedSink(sinks[k], name) for k in todo}
        outcomes = train_task_packed(
            [live[k][0].cfg for k in todo],
            name,
            backbone,
            tokenizer,
            checkpoint,
            [task_dir(live[k][0].run_dir, names, name) for k in todo],
            [sink_of[k] for k in todo],
            stop,
        )
        for k, outcome in zip(todo, outcomes, strict=True):
            job = live[k][0]
            out_dir = task_dir(job.run_dir, names, name)
            if isinstance(outcome, Interrupted):
                log.warning("%s task %s: %s", job.run_dir, name, outcome)
                interrupted[k] = str(outcome)
                continue
            if isinstance(outcome, BaseException):
                log.error("%s task %s failed: %s", job.run_dir, name, outcome)
                try:
                    raise outcome
                except BaseException as err:  # task_failed records the traceback
                    result = task_failed(job.cfg, name, out_dir, err)
            else:
                result = outcome
                rundir.clear_error(out_dir)
            files.write_json_atomic(out_dir / rundir.RESULT, result)
            results[k][name] = result
    for k, (job, _) in enumerate(live):
        job.summary = finish_job(job.cfg, names, results[k], interrupted[k], job.run_dir, sinks[k])


def train_task_packed(cfgs, task_name, backbone, tokenizer, checkpoint, out_dirs, sinks, stop):
    """:func:`repro.job.task.train_task` for a pack: one task's data, one prompt per member.

    Returns per member its ``result.json``, or the exception that ended it (``Interrupted``:
    its state is in ``last/``). An error of what the members share (the data) fails them all.
    """
    start = time.time()
    cfg = cfgs[0]
    try:
        data = prepare_task(cfg, task_name, tokenizer)
    except Exception as err:
        return [err] * len(cfgs)
    if cfg.model.device_map is None:
        device = resolve_device(cfg.trainer.device)
        backbone.to(device)
    else:
        device = backbone.get_input_embeddings().weight.device
    precision = resolve_precision(cfg.trainer.precision, device)
    members, weights, refused, names = [], [], {}, []
    for k, (c, out_dir, sink) in enumerate(zip(cfgs, out_dirs, sinks, strict=True)):
        try:  # a member's own init (a prompt file of another shape, ...) fails it alone
            weight = initial_prompt(c, data.task, backbone, tokenizer)
        except Exception as err:
            refused[k] = err
            continue
        prompt = SoftPrompt(weight).to(device)
        sidecar = {"backbone": checkpoint, "init": c.init.name, "task": data.task.name}
        save_initial_prompt(out_dir, weight, sidecar)
        model = PromptedT5(backbone, prompt, z_loss=c.trainer.z_loss)
        members.append(Member(c.trainer, model, out_dir, c.seed, sink, sidecar))
        weights.append(weight)
        names.append(c.name)

    def evaluate_fn(due):
        sub = PackedT5(backbone, [members[i].model.prompt for i in due])
        return evaluate_members(
            sub,
            tokenizer,
            data,
            list(range(len(due))),
            mode=cfg.task.eval_mode,
            batch_size=cfg.trainer.eval_batch_size,
            device=device,
        )

    if not members:
        return [refused[k] for k in range(len(cfgs))]
    train_pack(
        backbone,
        members,
        data.train_tokens.input_ids,
        data.train_tokens.labels,
        evaluate_fn=evaluate_fn,
        score_fn=data.task.task_score,
        pad_id=tokenizer.pad_token_id,
        device=device,
        z_loss=cfg.trainer.z_loss,
        precision=precision,
        stop=stop,
    )
    outcomes = []
    trained = iter(zip(members, weights, strict=True))
    for k, c in enumerate(cfgs):
        if k in refused:
            outcomes.append(refused[k])
            continue
        m, weight = next(trained)
        if m.error is not None:
            outcomes.append(m.error)
        elif m.interrupted is not None:
            outcomes.append(m.interrupted)
        else:
            result = task_result(
                c,
                data,
                m.model,
                backbone,
                checkpoint,
                m.state,
                m.out_dir,
                m.sink,
                start,
                precision,
                pack_size=len(members),
                # with dropout a member's numbers depend on its pack-mates: one dropout stream,
                # seeded by the first member, draws the packed batch's masks (docs/packing.md)
                pack_members=names,
                pack_dropout_seed=members[0].seed,
            )
            outcomes.append(result)
    return outcomes


def log_pack_memory(cfgs: Sequence[Config]) -> None:
    """Log a pack's memory estimate as it starts, and warn if it exceeds ``cost.gpu_memory_gb``:
    with the switches that make a member fit that does not fit alone
    (:func:`repro.memory.start_lines`), else naming the launcher's split."""
    try:
        need = pack_memory(cfgs)
    except (KeyError, ValueError, TypeError, OSError):  # no memory model for this model
        return
    budget = cfgs[0].cost.memory_gb
    accums = ", ".join(f"p{c.prompt_len}/s{c.seed} {describe_grad_accum(c)}" for c in cfgs)
    gb = need / 1e9
    log.info(
        f"pack of {len(cfgs)} member(s): memory ≈ {gb:.2f} GB (estimate; "
        f"cost.gpu_memory_gb={budget:g}); {accums}"
    )
    if need <= budget * 1e9:
        return
    alone = [c for c in cfgs if pack_memory([c]) > budget * 1e9]
    if alone:
        log_memory_plan(alone[0])
    else:
        log.warning(
            f"pack of {len(cfgs)} member(s) needs ≈ {gb:.2f} GB, more than the {budget:g} GB "
            "of one GPU (cost.gpu_memory_gb); split it: hydra.launcher.memory_gb or max_members"
        )
