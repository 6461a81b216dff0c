"""Packed training: several prompts trained on one frozen backbone in one pass, each as if alone.

Jobs of a sweep that share a backbone and a task differ only in their prompts (length, init,
seed, optimiser settings, step budget). A pack trains them together:

- **one step** concatenates every member's own batch (its own data order from its own seed,
  :func:`repro.data.train_batches`); each row carries its member's prompt in front of its
  input. Prompts of different lengths are padded on the *left* to the longest and the padding
  is masked out of attention, so every real token sits at the same distance from every other as
  in a solo run (T5's relative attention only sees distances);
- **the loss** is the sum of the members' own mean token losses: a member's prompt only reaches
  its own rows, so its gradient is exactly its solo gradient; each member has its own Adafactor
  (repro/optim.py) and its own ``TrainState``;
- **evaluation** is one decode over all due members' dev sets (:func:`repro.evaluate.predict`
  with ``members``), scored per member;
- **each member keeps its own run directory** (lock, fingerprint, ``config.yaml``,
  ``metrics.jsonl``, ``best/``, ``last/``, ``result.json``, W&B run), written by the same
  functions a solo job uses (:mod:`repro.run`, :mod:`repro.trainer`, :mod:`repro.rundir`).
  Members step on independently: a pack resumed after a kill at which some members had
  checkpointed and others not simply continues each from its own step; a finished member is
  skipped.

With dropout 0 on CPU in fp32 a member ends as its solo run does (to float rounding:
``tests/test_pack.py``). With dropout on, members draw their masks from one shared generator,
so masks differ from the solo runs' (docs/packing.md). The Hydra entry is the ``packed``
launcher (``hydra_plugins/repro_packed_launcher``), which groups a sweep's jobs with
:func:`pack_key` and splits a group that does not fit :func:`pack_memory` into packs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.config import Config
from repro.model import PromptedT5
from repro.packed_trainer import Member, PackedT5, evaluate_members, train_pack
from repro.prompts import SoftPrompt
from repro.trainer import Interrupted, StopFlag

log = logging.getLogger(__name__)

# --- which jobs may share a pack ---------------------------------------------------------------

# Keys in which the members of one pack may differ: what only the prompt, its optimiser or its
# own bookkeeping sees. Everything else (model.*, objective.*, lm_adapt_steps/source, task.*,
# the batch shape, dropout, dtype, device, z-loss, paths.cache_dir ...) decides what the frozen
# backbone computes on which data, and must be equal.
MEMBER_KEYS = ("name", "sweep_name", "logger", "prompt_len", "seed", "init", "dry_run", "cost")
# grad_accum: each member splits its own batch (a pass holds every member's j-th micro-batch)
MEMBER_TRAINER_KEYS = (
    "optimizer",
    "steps",
    "eval_every",
    "log_every",
    "stop_after_steps",
    "grad_accum",
)
MEMBER_PATH_KEYS = ("root",)


def pack_key(cfg: Config) -> str:
    """What jobs must share to be packed, as a canonical string (equal key = may share)."""
    plain = dataclasses.asdict(cfg)
    for key in MEMBER_KEYS:
        plain.pop(key, None)
    for key in MEMBER_TRAINER_KEYS:
        plain["trainer"].pop(key, None)
    for key in MEMBER_PATH_KEYS:
        plain["paths"].pop(key, None)
    plain["trainer"].pop("progress", None)
    # trainer.steps=0 scores the initial prompt and reads no training data: never with trainers
    plain["trainer"]["scoring_only"] = cfg.trainer.steps == 0
    if not packs_prompts(cfg):  # it trains the backbone itself: a pack of one, run as alone
        plain["alone"] = cfg.name
    return json.dumps(plain, sort_keys=True, default=str)


def packs_prompts(cfg: Config) -> bool:
    """Only prompts pack: a method that trains the backbone (model tuning) changes what the
    members would share (``repro.methods``)."""
    from repro.methods import get_method

    return get_method(cfg.method.name).trains == "prompt"


def pack_memory(cfgs: Sequence[Config]) -> int:
    """Estimated bytes of one pack on one device: the backbone once, then per member its prompt
    state and its batch's activations at the pack's padded length (longest prompt + input)
    (:mod:`repro.estimate`'s memory model)."""
    from repro.estimate import estimate

    longest = max(c.prompt_len for c in cfgs)
    jobs = [estimate(dataclasses.replace(c, prompt_len=longest)) for c in cfgs]
    states = [estimate(c).prompt_state_bytes for c in cfgs]
    return jobs[0].weights_bytes + sum(j.activation_bytes for j in jobs) + sum(states)


def split_packs(cfgs: Sequence[Config], budget_bytes: float, max_members: int | None = None):
    """Indices of ``cfgs`` (one group) cut into packs that fit ``budget_bytes`` each.

    Members are taken in order of prompt length, so that a pack pads little. A job that does
    not fit even alone is a pack of one (``repro.memory`` warns about it).
    """
    order = sorted(range(len(cfgs)), key=lambda i: (cfgs[i].prompt_len, i))
    packs: list[list[int]] = []
    for i in order:
        if packs:
            candidate = [*packs[-1], i]
            full = max_members is not None and len(packs[-1]) >= max_members
            if not full and pack_memory([cfgs[j] for j in candidate]) <= budget_bytes:
                packs[-1] = candidate
                continue
        packs.append([i])
    return [sorted(p) for p in packs]


def members_that_fit(cfg: Config, budget_bytes: float) -> int:
    """How many copies of ``cfg`` (prompt state, activations) fit beside one backbone."""
    one = pack_memory([cfg])
    weights = pack_memory([cfg, cfg]) - one  # the per-member part
    backbone = one - weights
    return max(0, int((budget_bytes - backbone) // weights)) if weights > 0 else 0


def describe_fit(cfg: Config) -> str:
    """What ``dry_run=true`` says about packing this job (``hydra/launcher=packed``)."""
    if not packs_prompts(cfg):
        what = "a LoRA adapter inside the backbone" if cfg.method.name == "lora" else "the backbone"
        return f"packing: method={cfg.method.name} trains {what}; its jobs never pack"
    budget = cfg.cost.gpu_memory_gb
    n = members_that_fit(cfg, budget * 1e9)
    return (
        f"packing: {n} member(s) like this job fit one {budget:g} GB GPU beside one backbone "
        f"(≈ {pack_memory([cfg]) / 1e9:.2f} GB alone; estimate; hydra/launcher=packed)"
    )


def plan_packs(
    cfgs: Sequence[Config],
    budget_gb: float | None = None,
    max_members: int | None = None,
    by_length: bool = False,
) -> list[list[int]]:
    """A sweep's jobs (indices of ``cfgs``) grouped by :func:`pack_key` (and, with
    ``by_length``, by prompt length too: see :func:`packs_by_length`), each group cut into
    packs that fit ``budget_gb`` (default: each job's ``cost.gpu_memory_gb``) by
    :func:`pack_memory`, and at most ``max_members`` members each. In order of first job."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        length = f"|prompt_len={cfg.prompt_len}" if by_length else ""
        groups.setdefault(pack_key(cfg) + length, []).append(i)
    packs = []
    for members in groups.values():
        group = [cfgs[i] for i in members]
        budget = (budget_gb or group[0].cost.gpu_memory_gb) * 1e9
        try:
            parts = split_packs(group, budget, max_members)
        except (KeyError, ValueError, TypeError):  # no memory model for this model: by count
            size = max_members or len(group)
            parts = [list(range(i, min(i + size, len(group)))) for i in range(0, len(group), size)]
        packs += [[members[j] for j in part] for part in parts]
    return packs


def packs_by_length(cfgs: Sequence[Config], choice: bool | None = None) -> bool:
    """Whether packs hold one prompt length each. A member is padded to its pack's longest
    prompt: on a GPU that padding is nearly free (a batch of 32 leaves it idle), on a CPU it
    costs what it computes (a pack of prompts 1…150 took 1.7× the unpacked wall time on the
    toy world; docs/packing.md). ``choice`` None (``hydra.launcher.by_length=auto``): by length
    when the jobs train on the CPU (``trainer.device`` cpu, or auto on a machine without CUDA)."""
    if choice is not None:
        return choice
    from repro.trainer import resolve_device

    def on_cpu(cfg: Config) -> bool:
        try:
            return resolve_device(cfg.trainer.device).type == "cpu"
        except ValueError:  # a device this machine lacks: the job itself says so
            return False

    return any(on_cpu(cfg) for cfg in cfgs)


def log_pack_memory(cfgs: Sequence[Config]) -> None:
    """Log a pack's memory estimate as it starts, and warn if it exceeds ``cost.gpu_memory_gb``:
    with the switches that make a member fit that does not fit alone
    (:func:`repro.memory.start_lines`), else naming the launcher's split."""
    from repro.memory import describe_grad_accum
    from repro.run import log_memory_plan

    try:
        need = pack_memory(cfgs)
    except (KeyError, ValueError, TypeError, OSError):  # no memory model for this model
        return
    budget = cfgs[0].cost.gpu_memory_gb
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


def describe_packs(
    cfgs: Sequence[Config], packs: Sequence[Sequence[int]], by_length: bool = False
) -> str:
    """The grouping printed before a packed sweep starts: one line per pack."""
    head = f"packed sweep: {len(cfgs)} jobs in {len(packs)} pack{'s' * (len(packs) != 1)}"
    if by_length:
        head += (
            " (one prompt length per pack: on a CPU a member would pay for its pack's longest "
            "prompt; hydra.launcher.by_length=false mixes them)"
        )
    lines = [head]
    for n, pack in enumerate(packs, 1):
        first = cfgs[pack[0]]
        shared = (
            f"model={first.model.size} objective={first.objective.name} "
            f"lm_adapt_steps={first.axes['lm_adapt_steps']} task={first.task.name}"
        )
        members = ", ".join(
            f"p{cfgs[i].prompt_len}/{cfgs[i].init.name}/s{cfgs[i].seed}" for i in pack
        )
        try:
            memory = f", ~{pack_memory([cfgs[i] for i in pack]) / 1e9:.2f} GB (estimate)"
        except (KeyError, ValueError, TypeError):
            memory = ""
        lines.append(
            f"  pack {n}: {len(pack)} member{'s' * (len(pack) != 1)} [{shared}]{memory}: {members}"
        )
    return "\n".join(lines)


# --- a pack of jobs, each in its own run directory ------------------------------------------


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
    """Run the jobs of one pack (equal :func:`pack_key`) as :func:`repro.run.run_experiment`
    runs one: lock, identity, skip a finished one, claim, train, ``result.json`` — with one
    backbone and a packed loop. Each job's outcome is left on it (``summary`` or ``error``).

    A job refused at its directory (in use, another config's) gets ``error`` and the others go
    on; a failure of what they share (the checkpoint, the data) raises for the pack.
    """
    from repro import files, rundir
    from repro.checkpoints import checkpoint_for
    from repro.run import prepare_assets
    from repro.tasks import task_names
    from repro.trainer import resolve_device

    first = jobs[0].cfg
    keys = {pack_key(j.cfg) for j in jobs}
    if len(keys) != 1:
        raise ValueError("run_pack: the jobs differ in more than their prompts (pack_key)")
    names = task_names(first.task.name)
    checkpoint = checkpoint_for(first)
    if first.model.device_map is None:
        resolve_device(first.trainer.device)
    prepare_assets(first, names)
    with contextlib.ExitStack() as locks:
        live = []
        for job in jobs:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                locks.enter_context(rundir.locked(job.run_dir))
                fp = rundir.fingerprint(job.cfg, names)
                if rundir.status_of(job.run_dir, fp) == "finished":
                    log.info("%s already holds this finished run: skipped", job.run_dir)
                    done = files.read_json(job.run_dir / rundir.SUMMARY) or files.read_json(
                        job.run_dir / rundir.RESULT
                    )
                    job.summary = {**done, "skipped": True}
                    continue
            except rundir.RunDirError as err:
                job.error = err
                continue
            live.append((job, fp))
        if live and packs_prompts(first):  # the members that run (not refused, not done)
            log_pack_memory([job.cfg for job, _ in live])
        if live and not packs_prompts(first):  # a pack of one (pack_key): the solo path
            from repro.run import _run_tasks, log_memory_plan

            log_memory_plan(first)

            job, fp = live[0]
            job.summary = _run_tasks(
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
    from omegaconf import OmegaConf

    from repro import files, rundir
    from repro.run import finish_job, load_model, open_sink, task_dir, task_failed
    from repro.tracking import ScopedSink

    cfg = live[0][0].cfg
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
    """:func:`repro.run.train_task` for a pack: one task's data, one prompt per member.

    Returns per member its ``result.json``, or the exception that ended it (``Interrupted``:
    its state is in ``last/``). An error of what the members share (the data) fails them all.
    """
    from repro.run import initial_prompt, prepare_task, save_initial_prompt, task_result
    from repro.trainer import resolve_device

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
    members, weights, refused = [], [], {}
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
        bf16_autocast=cfg.trainer.bf16_autocast,
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
                pack_size=len(members),
            )
            outcomes.append(result)
    return outcomes
