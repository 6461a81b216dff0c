"""Which jobs of a sweep may share a pack, and how they are cut into packs that fit one GPU.

Jobs pack when they differ only in what the prompt, its optimiser or its own bookkeeping sees
(:func:`pack_key`); a group is cut into packs by the memory model of :mod:`repro.estimate`
(:func:`pack_memory`). The packed launcher prints the grouping (:func:`describe_packs`),
``dry_run=true`` how many members like a job fit (:func:`describe_fit`),
``python -m repro.cost --packed`` what packing saves (:mod:`repro.cost.packed`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from repro.config import Config
from repro.estimate import estimate
from repro.methods import get_method

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
    members would share (``repro.methods``); a token batch (``trainer.batch_tokens``) is
    batched by ``repro.trainer`` alone, the packed loop cuts batches of ``batch_size``; a
    causal LM's prompts have no packed model (``repro.packed_trainer`` is T5's): each of its
    jobs runs alone, as under the basic launcher."""
    return (
        get_method(cfg.method.name).trains == "prompt"
        and cfg.trainer.batch_tokens is None
        and cfg.model.family != "causal"
    )


def pack_memory(cfgs: Sequence[Config]) -> int:
    """Estimated bytes of one pack on one device: the backbone once, then per member its prompt
    state and its batch's activations at the pack's padded length (longest prompt + input)
    (:mod:`repro.estimate`'s memory model)."""
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
    if cfg.model.family == "causal":
        return "packing: a causal LM's prompts have no packed model; its jobs run one by one"
    if not packs_prompts(cfg) and get_method(cfg.method.name).trains == "prompt":
        return "packing: trainer.batch_tokens batches by tokens; its jobs never pack"
    if not packs_prompts(cfg):
        what = "a LoRA adapter inside the backbone" if cfg.method.name == "lora" else "the backbone"
        return f"packing: method={cfg.method.name} trains {what}; its jobs never pack"
    budget = cfg.cost.memory_gb
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
    packs that fit ``budget_gb`` (default: each job's GPU memory, ``cost.memory_gb``) by
    :func:`pack_memory`, and at most ``max_members`` members each. In order of first job."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        length = f"|prompt_len={cfg.prompt_len}" if by_length else ""
        groups.setdefault(pack_key(cfg) + length, []).append(i)
    packs = []
    for members in groups.values():
        group = [cfgs[i] for i in members]
        budget = (budget_gb or group[0].cost.memory_gb) * 1e9
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
    from repro.trainer import resolve_device  # torch: not loaded by `python -m repro.cost`

    def on_cpu(cfg: Config) -> bool:
        try:
            return resolve_device(cfg.trainer.device).type == "cpu"
        except ValueError:  # a device this machine lacks: the job itself says so
            return False

    return any(on_cpu(cfg) for cfg in cfgs)


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
