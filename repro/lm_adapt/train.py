"""The LM-adaptation run: T5's Adafactor and rsqrt schedule, data parallel under torchrun, and
the loop (next batch, forward/backward/step, log, checkpoint) up to ``max(lm_adapt.steps)``,
resuming from ``last/``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from repro.backbone import fp32_logits, set_dropout
from repro.lm_adapt.checkpoints import (
    MANIFEST,
    STATE_FILE,
    find_state,
    save_state,
    save_step_checkpoint,
)
from repro.lm_adapt.config import LMAdaptConfig, LMAdaptRun, output_dir, source_checkpoint
from repro.lm_adapt.data import IGNORE_INDEX, Corpus, ExampleStream, collate_fixed, open_corpus
from repro.precision import Precision, resolve_precision
from repro.rng import rng_state, set_rng_state
from repro.tiny import ensure_tiny_t5
from repro.tracking import MetricsLog
from repro.trainer_config import with_precision

log = logging.getLogger("repro.lm_adapt")


def rsqrt_lr(step: int, warmup_steps: int = 10_000, step_offset: int = 0) -> float:
    """T5's inverse-square-root schedule for update ``step`` (1-based): 1/sqrt(max(t, warmup)).

    With ``step_offset=0`` and warmup 10,000 this is what HF ``Adafactor(relative_step=True)``
    computes (``min(1e-2, 1/sqrt(t))``), bit for bit.
    """
    return 1.0 / math.sqrt(max(step + step_offset, warmup_steps))


def build_optimizer(params, cfg: LMAdaptConfig):
    """HF Adafactor as T5 pre-trained: factored second moments, β2 = 1 - t^-0.8, eps (1e-30,
    1e-3), update clipping 1.0, parameter scaling, no momentum, no weight decay. The learning
    rate is set before every step from ``rsqrt_lr`` (so the schedule can be offset)."""
    from transformers.optimization import Adafactor

    return Adafactor(
        params,
        lr=rsqrt_lr(1, cfg.warmup_steps, cfg.step_offset),
        eps=(1e-30, 1e-3),
        clip_threshold=1.0,
        decay_rate=-0.8,
        beta1=None,
        weight_decay=0.0,
        scale_parameter=True,
        relative_step=False,
        warmup_init=False,
    )


def versions() -> dict[str, str]:
    """The library versions a manifest records."""
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _gather(value: Any, world: int) -> list[Any]:
    """``value`` of every rank, in rank order (every rank must call this at the same point)."""
    if world == 1:
        return [value]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def fingerprint(
    run: LMAdaptRun, source: str, corpus: Corpus, world: int, precision: str
) -> dict[str, Any]:
    """What decides the trajectory: a ``last/`` made with anything else cannot be resumed.
    ``precision``: the one this machine computes in (``lm_adapt.precision`` resolved)."""
    cfg = asdict(run.lm_adapt)
    for key in ("steps", "save_every", "log_every", "progress", "device"):
        cfg.pop(key)
    cfg["precision"] = precision
    return {"source": source, "corpus": corpus.name, "world_size": world, **cfg}


def lm_adapt(run: LMAdaptRun) -> dict[str, Any]:
    """Run (or resume) LM adaptation up to ``max(lm_adapt.steps)``; returns the last manifest.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains a DistributedDataParallel copy
    on its share of the documents and only rank 0 writes.
    """
    cfg = run.lm_adapt
    rank, world, local_rank = distributed()
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(
            f"lm_adapt.batch_size={cfg.batch_size} must be a multiple of WORLD_SIZE x "
            f"lm_adapt.grad_accum = {world} x {cfg.grad_accum}"
        )
    device = _device(cfg.device, local_rank)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(run, rank, world, device)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _train(run: LMAdaptRun, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    cfg = run.lm_adapt
    out = output_dir(run)
    source = source_checkpoint(run.model)
    if run.model.build_tiny and run.model.path and rank == 0:
        ensure_tiny_t5(run.model.path)
    if world > 1:
        torch.distributed.barrier()
    corpus = open_corpus(cfg)
    precision = resolve_precision(cfg.precision, device)
    mine = fingerprint(run, source, corpus, world, precision)

    # setup: weights from last/ when resuming, else the source checkpoint
    torch.manual_seed(cfg.seed + rank)  # dropout masks differ across ranks
    random.seed(cfg.seed + rank)
    state_dir = find_state(out / "last")
    saved = None
    if state_dir is not None:
        saved = torch.load(state_dir / STATE_FILE, weights_only=True)  # data, never code
        theirs = with_precision(saved["fingerprint"])  # a last/ from before the key
        if theirs != mine:
            diffs = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(
                f"{state_dir} holds LM adaptation with different settings (differs in: "
                f"{', '.join(diffs)}); use another paths.lm_adapt_dir or delete {out}"
            )
    tokenizer = AutoTokenizer.from_pretrained(source)
    # fp32 master weights whatever model.dtype says (prompt tuning's frozen-backbone dtype);
    # bf16 activations are lm_adapt.precision
    kwargs = {"dtype": torch.float32}
    if run.model.attn_implementation:
        kwargs["attn_implementation"] = run.model.attn_implementation
    model = T5ForConditionalGeneration.from_pretrained(
        str(state_dir) if saved else source, **kwargs
    )
    set_dropout(model, cfg.dropout)
    fp32_logits(model)  # under bf16, as T5X's logits_dense
    model.to(device).train()
    optimizer = build_optimizer(model.parameters(), cfg)
    step, positions = 0, [[0, 0] for _ in range(world)]
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"][rank])
        step, positions = saved["step"], saved["positions"]
        log.info("resuming LM adaptation from step %d (%s)", step, state_dir)
    todo = [s for s in cfg.steps if s > step]
    missing = [s for s in cfg.steps if s <= step and not (out / f"step_{s}" / MANIFEST).exists()]
    if missing:
        raise ValueError(
            f"lm_adapt.steps {missing} lie before the saved state (step {step}) in {out} and "
            "were never written; start a new run in another paths.lm_adapt_dir for them"
        )
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    stream = ExampleStream(corpus, tokenizer, cfg, position=positions[rank], rank=rank, world=world)
    micro_size = cfg.batch_size // (world * cfg.grad_accum)
    compute = Precision(precision, device)
    metrics = MetricsLog(out / "metrics.jsonl") if rank == 0 else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if saved:
            metrics.truncate_after(step)

    def manifest(at: int) -> dict[str, Any]:
        return {
            "step": at,
            "source": source,
            "steps": list(cfg.steps),
            "corpus": corpus.name,
            "seed": cfg.seed,
            "input_length": cfg.input_length,
            "target_length": cfg.target_length,
            "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "world_size": world,
            "optimizer": {
                "name": "adafactor",
                "schedule": "rsqrt",
                "warmup_steps": cfg.warmup_steps,
                "step_offset": cfg.step_offset,
                "lr": rsqrt_lr(at, cfg.warmup_steps, cfg.step_offset),
            },
            "dropout": cfg.dropout,
            "precision": precision,
            "data_positions": positions,  # per rank: [next document, examples of it used]
            "versions": versions(),
        }

    bar = tqdm(total=todo[-1] if todo else step, initial=step, disable=not cfg.progress or rank)
    window, window_start = [], time.perf_counter()
    while todo:
        # next batch: grad_accum micro-batches of this rank's share
        micro = [
            collate_fixed(
                stream.take(micro_size), cfg.input_length, cfg.target_length, tokenizer.pad_token_id
            )
            for _ in range(cfg.grad_accum)
        ]
        tokens = torch.tensor(sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro))
        if world > 1:
            tokens = tokens.to(device)
            torch.distributed.all_reduce(tokens)
        tokens = int(tokens)

        # forward/backward/step — summed token losses over the global token count, times world
        # because DDP averages gradients: the step sees the global per-token mean loss
        for group in optimizer.param_groups:
            group["lr"] = rsqrt_lr(step + 1, cfg.warmup_steps, cfg.step_offset)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, batch in enumerate(micro):
            batch = {k: v.to(device) for k, v in batch.items()}
            # DDP: all-reduce the gradients once, after the last micro-batch
            last = i == len(micro) - 1
            with net.no_sync() if world > 1 and not last else nullcontext():
                with compute:
                    logits = net(
                        input_ids=batch["input_ids"],
                        attention_mask=batch["attention_mask"],
                        decoder_input_ids=model.prepare_decoder_input_ids_from_labels(
                            labels=batch["labels"]
                        ),
                    ).logits
                loss = F.cross_entropy(
                    logits.float().flatten(0, 1),
                    batch["labels"].flatten(),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at step {step + 1}; try lm_adapt.precision=fp32"
                    )
                (loss * (world / tokens)).backward()
            loss_sum += loss.detach().double()
        optimizer.step()
        step += 1
        if world > 1:
            torch.distributed.all_reduce(loss_sum)
        positions = [list(p) for p in _gather(stream.position, world)]
        loss_value = float(loss_sum) / tokens

        # log
        window.append(loss_value)
        bar.update(1)
        if rank == 0 and (step % cfg.log_every == 0 or step == todo[0]):
            elapsed = time.perf_counter() - window_start
            record = {
                "kind": "train",
                "step": step,
                "loss": sum(window) / len(window),
                "lr": optimizer.param_groups[0]["lr"],
                "steps_per_s": len(window) / elapsed if elapsed > 0 else None,
                "documents": max(p[0] for p in positions),
            }
            metrics.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window, window_start = [], time.perf_counter()

        # checkpoint: the listed steps as HF checkpoints, last/ to resume from
        listed = step == todo[0]
        if rank == 0 and listed:
            save_step_checkpoint(out / f"step_{step}", model, tokenizer, manifest(step))
            log.info("wrote %s", out / f"step_{step}")
        if listed or step % cfg.save_every == 0:
            rngs = _gather(rng_state(), world)
        if rank == 0 and (listed or step % cfg.save_every == 0):
            save_state(
                out / "last",
                model,
                optimizer,
                step=step,
                positions=positions,
                rngs=rngs,
                fingerprint=mine,
                manifest=manifest(step),
            )
        if listed:
            todo.pop(0)
        if world > 1 and listed:
            torch.distributed.barrier()
    bar.close()
    return manifest(step)
