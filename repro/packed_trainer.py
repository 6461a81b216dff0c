"""Packed training: several prompts trained on one frozen backbone in one pass, each as if alone.

The members of a pack (:mod:`repro.pack`: jobs that differ only in their prompts) share the
backbone and the task's data; this module trains them together:

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
- **each member checkpoints into its own directory** (``metrics.jsonl``, ``best/``, ``last/``)
  with :mod:`repro.trainer`'s functions, and steps on independently: a pack resumed after a
  kill at which some members had checkpointed and others not continues each from its own step.

With dropout 0 on CPU in fp32 a member ends as its solo run does (to float rounding:
``tests/test_pack.py``). With dropout on, members draw their masks from one shared generator,
so masks differ from the solo runs' (docs/packing.md).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from repro.data import IGNORE_INDEX, train_batches
from repro.evaluate import evaluate
from repro.files import publish_dir
from repro.model import PromptedT5, token_loss
from repro.optim import build_prompt_optimizer
from repro.precision import Precision
from repro.prompts import SoftPrompt, save_prompt
from repro.rng import rng_state, set_rng_state
from repro.tracking import MetricsLog
from repro.trainer import (
    Interrupted,
    NonFiniteLoss,
    OutOfMemoryError,
    StopFlag,
    TrainState,
    _micro_batches,
    free_after_out_of_memory,
    load_checkpoint,
    next_grad_accum,
    out_of_memory,
    save_checkpoint,
    start_grad_accum,
)
from repro.trainer_config import TrainerConfig

# The logger its lines have always carried (``[repro.pack]``), as the pack's job logs under.
log = logging.getLogger("repro.pack")

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
    window: list = field(default_factory=lambda: [0, 0.0])  # steps_per_s: session steps, start
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
    compute,
) -> dict[int, float]:
    """Accumulate each member's gradient over its micro-batches, packed; returns
    {member: its batch's mean token loss}. A member whose loss is not finite gets its error
    set (and no gradient); the others go on."""
    totals = {i: sum(int((b["labels"] != -100).sum()) for b in micro[i]) for i in micro}
    losses = dict.fromkeys(micro, 0.0)
    for j in range(max(len(chunks) for chunks in micro.values())):
        parts = [(i, chunks[j]) for i, chunks in micro.items() if j < len(chunks)]
        batch = {k: v.to(device) for k, v in pack_batch(parts, pad_id).items()}
        with compute:
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
            m.state.grad_accum = larger  # kept in last/: a resume starts there
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
    precision: str = "fp32",
    stop: StopFlag | None = None,
) -> None:
    """Train every member's prompt in one packed loop; each member's outcome is left on it
    (``state``, or ``error`` / ``interrupted``). The loop is :func:`repro.trainer.train`'s,
    member by member, with the forward/backward and the evaluation packed.

    Args:
        evaluate_fn: member indices → their metrics on dev, in that order (one packed decode).
        score_fn: metrics → the number early stopping maximises.
        precision: the resolved precision of every member (:mod:`repro.precision`).
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
        m.window = [0, time.perf_counter()]
        m.accum = start_grad_accum(m.cfg, m.state)
    packed = PackedT5(backbone, [m.model.prompt for m in members], z_loss=z_loss)
    compute = Precision(precision, device)

    def checkpoint_and_eval(due: Sequence[int]) -> None:
        with compute:
            scored = evaluate_fn(due)
        for i, metrics in zip(due, scored, strict=True):
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
        rng, losses = rng_state(), None
        while losses is None:
            for i in running:
                members[i].optimizer.zero_grad(set_to_none=True)
            micro = {
                i: _micro_batches(idx[i], train_ids, train_labels, members[i].accum, pad_id)
                for i in running
            }
            try:
                losses = _forward_backward(packed, members, micro, pad_id, device, compute)
            except OutOfMemoryError:
                rows = sum(len(chunks[0]["input_ids"]) for chunks in micro.values())
            if losses is None:  # out of the except block: its frames' tensors are freed
                _more_micro_batches(members, running, rows)
                set_rng_state(rng)
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
            m.state.window_loss += losses[i]  # saved in last/: a resume goes on with it
            m.state.window_steps += 1
            m.window[0] += 1
            if m.state.step % m.cfg.log_every == 0 or m.state.step == m.cfg.steps:
                elapsed = time.perf_counter() - m.window[1]
                record = {
                    "kind": "train",
                    "step": m.state.step,
                    "loss": m.state.window_loss / m.state.window_steps,
                    "lr": m.optimizer.param_groups[0]["lr"],
                    "steps_per_s": m.window[0] / elapsed if elapsed > 0 else None,
                    "epoch": m.state.epoch,
                }
                m.metrics_log.append(record)
                m.sink.log(record, step=m.state.step)
                m.state.window_loss, m.state.window_steps = 0.0, 0
                m.window = [0, time.perf_counter()]

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
    :class:`repro.job.task.TaskData`, shared by the pack) → each member's metrics, in order."""
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
