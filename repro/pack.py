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
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from repro.config import Config, TrainerConfig
from repro.data import IGNORE_INDEX, train_batches
from repro.files import publish_dir
from repro.model import PromptedT5, token_loss
from repro.optim import build_prompt_optimizer
from repro.prompts import SoftPrompt
from repro.tracking import MetricsLog
from repro.trainer import (
    Interrupted,
    NonFiniteLoss,
    OutOfMemoryError,
    StopFlag,
    TrainState,
    _micro_batches,
    _rng_state,
    _set_rng_state,
    free_after_out_of_memory,
    load_checkpoint,
    next_grad_accum,
    out_of_memory,
    save_checkpoint,
)

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
    (:mod:`repro.cost`'s memory model)."""
    from repro.cost import estimate

    longest = max(c.prompt_len for c in cfgs)
    jobs = [estimate(dataclasses.replace(c, prompt_len=longest)) for c in cfgs]
    states = [estimate(c).prompt_state_bytes for c in cfgs]
    return jobs[0].weights_bytes + sum(j.activation_bytes for j in jobs) + sum(states)


def split_packs(cfgs: Sequence[Config], budget_bytes: float, max_members: int | None = None):
    """Indices of ``cfgs`` (one group) cut into packs that fit ``budget_bytes`` each.

    Members are taken in order of prompt length, so that a pack pads little. A job that does
    not fit even alone is a pack of one (``repro.cost`` warns about it).
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
    (:func:`repro.cost.start_lines`), else naming the launcher's split."""
    from repro.cost import describe_grad_accum
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


# --- the packed model ------------------------------------------------------------------------


class PackedT5(nn.Module):
    """One frozen backbone, M soft prompts; row b of a batch is prompted by prompt ``member[b]``.

    The encoder sees ``[pad]*(P_max − P_m) + P_m + X`` for a row of member m; the pad columns
    are masked. ``rows(member)`` binds the member of every row for ``generate`` and
    ``score_candidates`` (borrowed from :class:`PromptedT5`, which call ``encoder_inputs``).
    """

    generate = PromptedT5.generate
    score_candidates = PromptedT5.score_candidates
    encode = PromptedT5.encode

    def __init__(self, backbone: nn.Module, prompts: Sequence[SoftPrompt], z_loss: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.prompts = nn.ModuleList(prompts)
        self.z_loss = z_loss
        self._member: Tensor | None = None
        backbone.requires_grad_(False)

    @contextlib.contextmanager
    def rows(self, member: Tensor) -> Iterator[None]:
        """Inside: row b of every batch belongs to member ``member[b]`` ([B] long)."""
        self._member = member
        try:
            yield
        finally:
            self._member = None

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, P_max+T, H] embeddings, [B, P_max+T] mask) for the bound rows.

        Each run of consecutive rows of one member gets its left-padded prompt by ``expand``,
        as :func:`repro.prompts.prepend_prompt` does for a solo batch: the prompt's gradient is
        then summed over its rows in the same order as in a solo run.
        """
        if self._member is None:
            raise RuntimeError("PackedT5: bind the rows' members first (with model.rows(...))")
        embeds = self.backbone.get_input_embeddings()(input_ids)
        longest = max(p.length for p in self.prompts)
        width = embeds.shape[-1]
        prefixes, masks = [], []
        for m, count in _runs(self._member.tolist()):
            prompt = self.prompts[m]().to(embeds.dtype)
            pad = longest - prompt.shape[0]
            rows = torch.cat([prompt.new_zeros(pad, width), prompt]) if pad else prompt
            prefixes.append(rows.unsqueeze(0).expand(count, -1, -1))
            mask = attention_mask.new_ones(count, longest)
            mask[:, :pad] = 0
            masks.append(mask)
        return (
            torch.cat([torch.cat(prefixes), embeds], dim=1),
            torch.cat([torch.cat(masks), attention_mask], dim=1),
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, member: Tensor
    ) -> dict[int, Tensor]:
        """Teacher-forced forward of a packed batch → {member: its mean token loss}."""
        with self.rows(member):
            embeds, mask = self.encoder_inputs(input_ids, attention_mask)
        decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        out = self.backbone(
            inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_input_ids
        )
        logits = out.logits.float()
        member = member.to(logits.device)
        return {
            int(m): token_loss(logits[member == m], labels[member == m], self.z_loss)
            for m in member.unique().tolist()
        }


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    """[3, 3, 0, 3] → [(3, 2), (0, 1), (3, 1)]: (value, length) of each run of equal values."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    return runs


def pack_batch(parts: Sequence[tuple[int, Mapping[str, Tensor]]], pad_id: int) -> dict[str, Tensor]:
    """Collated batches of several members → one batch (right-padded to the longest) + ``member``."""
    longest = max(b["input_ids"].shape[1] for _, b in parts)
    longest_label = max(b["labels"].shape[1] for _, b in parts)
    pad = torch.nn.functional.pad
    ids, masks, labels, member = [], [], [], []
    for m, b in parts:
        extra = longest - b["input_ids"].shape[1]
        ids.append(pad(b["input_ids"], (0, extra), value=pad_id))
        masks.append(pad(b["attention_mask"], (0, extra), value=0))
        labels.append(
            pad(b["labels"], (0, longest_label - b["labels"].shape[1]), value=IGNORE_INDEX)
        )
        member.append(torch.full((len(b["input_ids"]),), m, dtype=torch.long))
    return {
        "input_ids": torch.cat(ids),
        "attention_mask": torch.cat(masks),
        "labels": torch.cat(labels),
        "member": torch.cat(member),
    }


# --- the packed loop -------------------------------------------------------------------------


@dataclass
class Member:
    """One prompt of a pack, with everything its solo ``train`` would hold."""

    cfg: TrainerConfig
    model: PromptedT5  # the shared backbone + this member's prompt: what checkpoints save
    out_dir: Path
    seed: int
    sink: Any
    sidecar: Mapping[str, Any]
    optimizer: Any = None
    state: TrainState = field(default_factory=TrainState)
    metrics_log: MetricsLog | None = None
    order: list = field(default_factory=list)
    session_steps: int = 0
    window: list = field(default_factory=lambda: [0.0, 0, 0.0])  # loss sum, steps, start
    accum: int = 0  # micro-batches per step: cfg.grad_accum, more after an out-of-memory step
    error: BaseException | None = None
    interrupted: Interrupted | None = None

    @property
    def running(self) -> bool:
        return self.error is None and self.interrupted is None and self.state.step < self.cfg.steps


def _forward_backward(
    packed: PackedT5,
    members: Sequence[Member],
    micro: Mapping[int, Sequence[dict[str, Tensor]]],
    pad_id: int,
    device,
    autocast,
) -> dict[int, float]:
    """Accumulate each member's gradient over its micro-batches, packed; returns
    {member: its batch's mean token loss}. A member whose loss is not finite gets its error
    set (and no gradient); the others go on."""
    totals = {i: sum(int((b["labels"] != -100).sum()) for b in micro[i]) for i in micro}
    losses = dict.fromkeys(micro, 0.0)
    for j in range(max(len(chunks) for chunks in micro.values())):
        parts = [(i, chunks[j]) for i, chunks in micro.items() if j < len(chunks)]
        batch = {k: v.to(device) for k, v in pack_batch(parts, pad_id).items()}
        with autocast:
            member_loss = packed(
                batch["input_ids"], batch["attention_mask"], batch["labels"], batch["member"]
            )
        total = 0.0
        for i, chunk in parts:
            loss = member_loss[i]
            if members[i].error is not None:
                continue
            if not torch.isfinite(loss):
                members[i].error = NonFiniteLoss(
                    f"non-finite loss ({loss.item()}) at step {members[i].state.step + 1}; "
                    "try a lower trainer.optimizer.lr or float32 weights"
                )
                continue
            weight = int((chunk["labels"] != -100).sum()) / totals[i]
            total = total + loss * weight
            losses[i] += loss.item() * weight
        if torch.is_tensor(total):
            total.backward()
    return losses


def _more_micro_batches(members: Sequence[Member], running: Sequence[int], rows: int) -> None:
    """After an out-of-memory pass of ``rows`` rows: every running member whose grad_accum was
    auto takes its next count (logged), its gradient and a non-finite-loss mark of the failed
    try dropped; the error of :func:`repro.trainer.out_of_memory` if none can."""
    step = min(members[i].state.step for i in running) + 1
    where = f"with packed micro-batches of {rows} row(s)"
    grown = {}
    for i in running:
        m = members[i]
        m.optimizer.zero_grad(set_to_none=True)
        if isinstance(m.error, NonFiniteLoss):  # set in the failed try: the step is redone
            m.error = None
        larger = next_grad_accum(m.cfg, m.accum)
        if larger is not None:
            grown[i], m.accum = larger, larger
    if not grown:
        first = members[running[0]]
        raise out_of_memory(step, where, first.accum, first.cfg.grad_accum_auto)
    free_after_out_of_memory()
    counts = ", ".join(f"{members[i].out_dir.name}: {k}" for i, k in grown.items())
    log.warning("pack step %d: out of memory %s; retrying with grad_accum %s", step, where, counts)


def train_pack(
    backbone: nn.Module,
    members: Sequence[Member],
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[Sequence[int]],
    *,
    evaluate_fn: Callable[[Sequence[int]], list[dict[str, float]]],
    score_fn: Callable[[Mapping[str, float]], float],
    pad_id: int,
    device: torch.device,
    z_loss: float = 0.0,
    bf16_autocast: bool = False,
    stop: StopFlag | None = None,
) -> None:
    """Train every member's prompt in one packed loop; each member's outcome is left on it
    (``state``, or ``error`` / ``interrupted``). The loop is :func:`repro.trainer.train`'s,
    member by member, with the forward/backward and the evaluation packed.

    Args:
        evaluate_fn: member indices → their metrics on dev, in that order (one packed decode).
        score_fn: metrics → the number early stopping maximises.
    """
    stop = stop or StopFlag()
    torch.manual_seed(members[0].seed)  # dropout's one generator (docs/packing.md)
    random.seed(members[0].seed)
    lengths = [len(x) for x in train_ids]
    for m in members:
        m.out_dir.mkdir(parents=True, exist_ok=True)
        m.metrics_log = MetricsLog(m.out_dir / "metrics.jsonl")
        m.optimizer = build_prompt_optimizer(
            m.model.trainable_parameters(), **asdict(m.cfg.optimizer)
        )
        m.state = load_checkpoint(m.out_dir / "last", m.model, m.optimizer) or TrainState()
        if m.state.step:
            log.info("%s: resuming from step %d", m.out_dir, m.state.step)
        m.metrics_log.truncate_after(m.state.step)
        m.order = train_batches(
            lengths, m.cfg.batch_size, batching=m.cfg.batching, seed=m.seed, epoch=m.state.epoch
        )
        m.window = [0.0, 0, time.perf_counter()]
        m.accum = m.cfg.grad_accum
    packed = PackedT5(backbone, [m.model.prompt for m in members], z_loss=z_loss)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast)

    def checkpoint_and_eval(due: Sequence[int]) -> None:
        for i, metrics in zip(due, evaluate_fn(due), strict=True):
            m = members[i]
            score = score_fn(metrics)
            record = {"kind": "eval", "step": m.state.step, **metrics, "score": score}
            if score > m.state.best_score:
                m.state.best_step, m.state.best_score = m.state.step, score
                m.state.best_metrics = metrics
                publish_dir(
                    m.out_dir / "best",
                    lambda d, m=m: save_prompt_of(m, d),
                )
            record["best_score"] = m.state.best_score
            m.metrics_log.append(record)
            m.sink.log(record, step=m.state.step)
            save_checkpoint(m.out_dir / "last", m.model, m.optimizer, m.state, m.sidecar)

    packed.train()
    while running := [i for i, m in enumerate(members) if m.running]:
        # next batch of every member (its own order: seed, epoch)
        idx = {}
        for i in running:
            m = members[i]
            if m.state.position >= len(m.order):
                m.state.epoch, m.state.position = m.state.epoch + 1, 0
                m.order = train_batches(
                    lengths, m.cfg.batch_size, batching=m.cfg.batching, seed=m.seed,
                    epoch=m.state.epoch,
                )  # fmt: skip
            idx[i] = m.order[m.state.position]
            m.state.position += 1

        # forward/backward/step (one pass for the pack; one optimiser per member); out of
        # memory: the same step again, each member with grad_accum=auto in more micro-batches
        step_start = time.perf_counter()
        rng, losses = _rng_state(), None
        while losses is None:
            for i in running:
                members[i].optimizer.zero_grad(set_to_none=True)
            micro = {
                i: _micro_batches(idx[i], train_ids, train_labels, members[i].accum, pad_id)
                for i in running
            }
            try:
                losses = _forward_backward(packed, members, micro, pad_id, device, autocast)
            except OutOfMemoryError:
                rows = sum(len(chunks[0]["input_ids"]) for chunks in micro.values())
            if losses is None:  # out of the except block: its frames' tensors are freed
                _more_micro_batches(members, running, rows)
                _set_rng_state(rng)
        stepped = [i for i in running if members[i].error is None]
        for i in stepped:
            members[i].optimizer.step()
        share = (time.perf_counter() - step_start) / max(1, len(running))
        for i in stepped:
            m = members[i]
            m.state.step += 1
            m.session_steps += 1
            m.state.train_seconds += share  # the pack's step time, shared out

            # log
            m.window[0] += losses[i]
            m.window[1] += 1
            if m.state.step % m.cfg.log_every == 0 or m.state.step == m.cfg.steps:
                elapsed = time.perf_counter() - m.window[2]
                record = {
                    "kind": "train",
                    "step": m.state.step,
                    "loss": m.window[0] / m.window[1],
                    "lr": m.optimizer.param_groups[0]["lr"],
                    "steps_per_s": m.window[1] / elapsed if elapsed > 0 else None,
                    "epoch": m.state.epoch,
                }
                m.metrics_log.append(record)
                m.sink.log(record, step=m.state.step)
                m.window = [0.0, 0, time.perf_counter()]

        # eval + checkpoint (the members due now, in one packed decode)
        due = [
            i
            for i in stepped
            if members[i].state.step % members[i].cfg.eval_every == 0
            or members[i].state.step == members[i].cfg.steps
        ]
        if due:
            checkpoint_and_eval(due)
            packed.train()

        # stop early when asked (preemption signal, per-session step budget)
        for i in stepped:
            m = members[i]
            if m.cfg.stop_after_steps and m.session_steps >= m.cfg.stop_after_steps:
                stop.set(f"trainer.stop_after_steps={m.cfg.stop_after_steps}")
        if stop.reason:
            for m in members:
                if m.running:
                    save_checkpoint(m.out_dir / "last", m.model, m.optimizer, m.state, m.sidecar)
                    m.interrupted = Interrupted(m.state.step, stop.reason)
    # stop: a member resumed after its last step has nothing left to do but report
    late = [i for i, m in enumerate(members) if m.error is None and m.interrupted is None]
    late = [i for i in late if members[i].state.best_step < 0]
    if late:
        checkpoint_and_eval(late)


def save_prompt_of(member: Member, directory: Path) -> None:
    from repro.prompts import save_prompt

    save_prompt(member.model.prompt.weight, directory, step=member.state.step, **member.sidecar)


def evaluate_members(
    packed: PackedT5,
    tokenizer,
    data,
    due: Sequence[int],
    *,
    mode: str,
    batch_size: int,
    device,
) -> list[dict[str, float]]:
    """One decode over the dev sets of the members ``due`` (``data``: a
    :class:`repro.run.TaskData`, shared by the pack) → each member's metrics, in order."""
    from repro.evaluate import evaluate

    dev_ids = data.dev_tokens.input_ids
    members = [m for m in due for _ in dev_ids]
    _, predictions = evaluate(
        packed,
        tokenizer,
        data.task,
        [ex for _ in due for ex in data.dev_examples],
        [ids for _ in due for ids in dev_ids],
        mode=mode,
        sentinel=data.sentinel,
        batch_size=batch_size * len(due),
        max_new_tokens=data.limit.length,
        device=device,
        members=members,
        score=False,
    )
    n = len(dev_ids)
    return [
        data.task.score(predictions[k * n : (k + 1) * n], data.dev_examples)
        for k in range(len(due))
    ]


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
    from repro.config import checkpoint_for
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
