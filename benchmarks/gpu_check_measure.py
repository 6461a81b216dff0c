"""What ``gpu_check.py`` measures with: the suite's config of a measurement, its random-weight
backbone built on the device, BoolQ-length token batches, and timed training steps through
:func:`repro.trainer.forward_backward` (FLOPs of the tensors computed, peak CUDA memory).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import random
import statistics
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from repro import rundir  # noqa: F401  (registers the run_name resolver the config names runs with)
from repro.backbone import prepare_backbone, resolve_dtype, set_dropout
from repro.config import CONF_DIR, Config, register_configs
from repro.estimate import Shape, count_params, estimate, shape_of, step_flops
from repro.resolve import load_config
from repro.trainer import (
    OutOfMemoryError,
    _micro_batches,
    forward_backward,
    free_after_out_of_memory,
    next_grad_accum,
    out_of_memory,
)

HERE = Path(__file__).resolve().parent
LENGTHS_FILE = HERE / "gpu_check_boolq_lengths.json"
PAD, EOS = 0, 1  # T5's ids
# --tiny: every size at this shape (a T5.1.1 of d_model 32, 2 + 2 layers), BoolQ's lengths / 16
TINY_SHAPE = {"d_model": 32, "num_layers": 2, "num_heads": 4, "d_kv": 8, "d_ff": 64}
TINY_VOCAB = 512
TINY_LENGTH_DIVISOR = 16
# How long a measurement may take at worst (gpu_check.py skips one that no longer fits the
# budget; benchmarks/README.md): MFU at least this, a kernel-launch floor per layer and step
# (HF's eager T5 launches ~100 kernels per layer in forward + backward), and the build.
MFU_FLOOR = 0.15
LAUNCH_S_PER_LAYER = 0.003


@functools.cache
def compose_config(overrides: tuple[str, ...]) -> Config:
    """conf/config.yaml with ``overrides``, validated and resolved (``trainer.grad_accum=auto``
    settled) exactly as a job loads it (:func:`repro.resolve.load_config`). Cached: callers
    change a config only through ``dataclasses.replace``."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides)))


def with_trainer(cfg: Config, **changes) -> Config:
    """``cfg`` with trainer keys changed; keeps whether ``grad_accum`` was auto (an attribute
    :func:`repro.resolve.resolve` sets, which ``dataclasses.replace`` would drop)."""
    trainer = dataclasses.replace(cfg.trainer, **changes)
    trainer.grad_accum_auto = cfg.trainer.grad_accum_auto
    return dataclasses.replace(cfg, trainer=trainer)


def memory_estimate(cfg: Config, input_len: int, target_len: int, grad_accum: int) -> int:
    """:func:`repro.estimate.estimate`'s memory of ``cfg`` at the measured lengths (the longest
    micro-batch's padded input, without the prompt) and micro-batch count."""
    cost = dataclasses.replace(cfg.cost, input_len=input_len, target_len=target_len)
    return estimate(
        dataclasses.replace(with_trainer(cfg, grad_accum=grad_accum), cost=cost)
    ).memory_bytes


# --- the device -----------------------------------------------------------------------------


def device_info(device: torch.device) -> dict:
    """The JSON's ``device`` block."""
    from repro.gpus import gpu_of_device
    from repro.precision import device_name, supports_bf16

    cuda = device.type == "cuda"
    name = device_name(device)
    return {
        "name": name,
        "type": device.type,
        "gpu": gpu_of_device(name) if cuda else None,
        "memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        "bf16": supports_bf16(device),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def release(device: torch.device) -> None:
    """Give the device's cached blocks back between measurements (a CPU has none: the
    collection, slow with transformers and Hydra loaded, is skipped there)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


@contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# --- the backbone ---------------------------------------------------------------------------


def build_backbone(cfg: Config, device: torch.device) -> torch.nn.Module:
    """A random-weight T5.1.1 of ``cfg.model``'s shape (gated-GELU, untied LM head), allocated
    directly on ``device`` in ``cfg.model.dtype`` (an 11B model never exists on the CPU), with
    the switches :func:`repro.job.assets.load_model` applies to a loaded one: frozen, fused
    GELU, activation checkpointing, ``model.dropout``."""
    from transformers import T5Config, T5ForConditionalGeneration

    s = shape_of(cfg.model)
    m = cfg.model
    kwargs = {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}
    config = T5Config(
        vocab_size=s.vocab_size,
        d_model=s.d_model,
        d_kv=s.d_kv,
        d_ff=s.d_ff,
        num_layers=s.num_layers,
        num_decoder_layers=s.num_decoder_layers,
        num_heads=s.num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=m.dropout,
        decoder_start_token_id=PAD,
        pad_token_id=PAD,
        eos_token_id=EOS,
        **kwargs,
    )
    with torch.device(device), default_dtype(resolve_dtype(m.dtype)), torch.no_grad():
        model = T5ForConditionalGeneration(config)
        # transformers 5 builds T5 tied whatever the config says (it reads
        # tie_word_embeddings=False only as "no output scaling"): T5.1.1's own head, by hand
        head = torch.empty_like(model.shared.weight).normal_(std=s.d_model**-0.5)
        model.lm_head.weight = torch.nn.Parameter(head)
    prepare_backbone(
        model, gradient_checkpointing=m.gradient_checkpointing, fused_gelu=m.fused_gelu
    )
    set_dropout(model, m.dropout)
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied tensor once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# --- the batches ----------------------------------------------------------------------------


def load_lengths(tiny: bool) -> dict:
    """The frozen BoolQ lengths (gpu_check_lengths.py); --tiny: divided by 16 (at least 2)."""
    frozen = json.loads(LENGTHS_FILE.read_text())
    if tiny:
        frozen["lengths"] = [max(2, n // TINY_LENGTH_DIVISOR) for n in frozen["lengths"]]
        frozen["source"] += f"; --tiny: lengths / {TINY_LENGTH_DIVISOR}"
    return frozen


@dataclass
class Batches:
    """Token batches of random ids: ``ids``/``labels`` per example (eos last, unpadded), and the
    examples of each step (``steps``, the longest batch first)."""

    ids: list[list[int]]
    labels: list[list[int]]
    steps: list[list[int]]


def draw_batches(
    lengths: Sequence[int], batch: int, n_steps: int, vocab: int, target: int, seed: int
) -> Batches:
    """``n_steps`` batches of ``batch`` input lengths drawn from ``lengths`` without replacement
    (i.i.d. batches, as ``trainer.batching=random``), each padded later to its longest. The
    batch with the longest input goes first (a warm-up step): a retry after running out of
    memory then happens before the timed steps."""
    rng = random.Random(seed)
    drawn = [rng.sample(list(lengths), batch) for _ in range(n_steps)]
    drawn.sort(key=max, reverse=True)
    drawn = drawn[:1] + rng.sample(drawn[1:], len(drawn) - 1)
    gen = torch.Generator().manual_seed(seed)
    ids, labels, steps = [], [], []
    for step in drawn:
        steps.append(list(range(len(ids), len(ids) + len(step))))
        for n in step:
            ids.append([*torch.randint(3, vocab, (n - 1,), generator=gen).tolist(), EOS])
            labels.append([*torch.randint(3, vocab, (target - 1,), generator=gen).tolist(), EOS])
    return Batches(ids, labels, steps)


def micro_shapes(batches: Batches, idx: list[int], accum: int) -> list[tuple[int, int, int]]:
    """(rows, padded input length, padded target length) of each micro-batch of a step, as
    :func:`repro.trainer._micro_batches` cuts and pads it."""
    size = math.ceil(len(idx) / accum)
    chunks = [idx[i : i + size] for i in range(0, len(idx), size)]
    return [
        (
            len(c),
            max(len(batches.ids[i]) for i in c),
            max(len(batches.labels[i]) for i in c),
        )
        for c in chunks
    ]


def flops_of(
    shape: Shape, micro: Sequence[tuple[int, int, int]], prompt_len: int, ckpt: bool
) -> int:
    """:func:`repro.estimate.step_flops` of the tensors a step computes (each micro-batch at
    its padded lengths; the prompt in front of the encoder's input)."""
    return sum(
        step_flops(shape, b, prompt_len + t, n, ckpt, weight_grads=False) for b, t, n in micro
    )


@dataclass
class Planned:
    """What a training-step measurement computes, known before it runs."""

    flops_per_step: int  # mean over the timed steps
    input_tokens_mean: float  # padded input tokens per example (prompt excluded), timed steps
    longest_input: int  # the longest micro-batch's padded input (what peak memory is set by)
    target_tokens: int


def plan_steps(
    batches: Batches, warmup: int, accum: int, shape: Shape, prompt_len: int, ckpt: bool
) -> Planned:
    timed = batches.steps[warmup:] or batches.steps
    micro = [micro_shapes(batches, idx, accum) for idx in timed]
    rows = sum(b for m in micro for b, _, _ in m)
    return Planned(
        flops_per_step=round(statistics.fmean(flops_of(shape, m, prompt_len, ckpt) for m in micro)),
        input_tokens_mean=sum(b * t for m in micro for b, t, _ in m) / rows,
        longest_input=max(t for m in micro for _, t, _ in m),
        target_tokens=max(t for m in micro for _, _, t in m),
    )


# --- timed steps ----------------------------------------------------------------------------


@dataclass
class Timed:
    seconds_per_step: float  # mean over the timed steps
    grad_accum: int  # the micro-batches it ended at (grows after an out-of-memory try)
    planned: Planned  # at that grad_accum
    peak_memory_bytes: int | None  # CUDA: max allocated over the timed steps (weights included)
    timed_steps: int


def train_steps(
    model,
    optimizer,
    batches: Batches,
    cfg: Config,
    device: torch.device,
    compute,
    warmup: int,
) -> Timed:
    """Warm-up steps, then timed ones: zero_grad, :func:`repro.trainer.forward_backward` over the
    step's micro-batches (``trainer.grad_accum``; out of memory with ``grad_accum=auto``: the
    step again in more micro-batches, as :func:`repro.trainer.train` does), optimizer step.
    A step is timed from a synchronised start to a synchronised end; peak memory is reset
    after the warm-up."""
    accum = cfg.trainer.grad_accum
    times = []
    for k, idx in enumerate(batches.steps):
        if k == warmup:
            reset_peak(device)
        sync(device)
        start, loss, retried = time.perf_counter(), None, False
        while loss is None:
            optimizer.zero_grad(set_to_none=True)
            micro = _micro_batches(idx, batches.ids, batches.labels, accum, PAD)
            try:
                loss = forward_backward(model, micro, device, compute, k + 1)
            except OutOfMemoryError:
                rows = len(micro[0]["input_ids"])
            if loss is None:  # out of the except block: the failed try's tensors are freed
                del micro
                optimizer.zero_grad(set_to_none=True)
                larger = next_grad_accum(cfg.trainer, accum)
                if larger is None:
                    where = f"with micro-batches of {rows} example(s)"
                    raise out_of_memory(k + 1, where, accum, cfg.trainer.grad_accum_auto)
                free_after_out_of_memory()
                accum, retried = larger, True
        optimizer.step()
        sync(device)
        if k >= warmup and not retried:  # a retried step's time holds its failed try
            times.append(time.perf_counter() - start)
    if not times:
        raise RuntimeError("no timed step completed without an out-of-memory retry")
    shape, ckpt = shape_of(cfg.model), cfg.model.gradient_checkpointing
    return Timed(
        seconds_per_step=statistics.fmean(times),
        grad_accum=accum,
        planned=plan_steps(batches, warmup, accum, shape, cfg.prompt_len, ckpt),
        peak_memory_bytes=peak_bytes(device),
        timed_steps=len(times),
    )


def predicted_seconds(
    cfg: Config, flops_per_step: int, steps: int, peak_tflops: float | None
) -> float:
    """A measurement's worst expected wall time on a GPU of ``peak_tflops``: the build
    (2 s + 2 s per billion parameters), then each step at MFU ``MFU_FLOOR`` plus a launch floor
    of ``LAUNCH_S_PER_LAYER`` per encoder and decoder layer. 0 without a peak (a CPU)."""
    if not peak_tflops:
        return 0.0
    s = shape_of(cfg.model)
    build = 2.0 + 2.0 * count_params(s) / 1e9
    per_step = flops_per_step / (peak_tflops * 1e12 * MFU_FLOOR)
    per_step += LAUNCH_S_PER_LAYER * (s.num_layers + s.num_decoder_layers)
    return build + steps * per_step
