"""Does a job fit its GPU? The GPUs it needs, ``trainer.grad_accum=auto``, and the smallest sets of
memory switches that make a job fit, found by re-estimating it with each
(:func:`memory_fixes`); the lines that say so (a job's start, ``dry_run=true``,
``python -m repro.cost``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from repro.calibration import load_calibration
from repro.config import DEVICE_MAP_STRATEGIES, Config
from repro.estimate import JobCost, estimate
from repro.trainer_config import divisors

MAX_GPUS = 8  # model.device_map spreads a job over the GPUs of one machine


def memory_per_gpu(job: JobCost, gpus: int = 1) -> int:
    """Bytes on the fullest GPU when ``model.device_map`` spreads the job's layers over ``gpus``
    GPUs: weights and activations split evenly (accelerate's balanced map; layer granularity
    ignored), the prompt state whole on one of them. ``gpus=1``: the job's memory. With a
    calibration (``cost.calibration``), × the measured/estimated ratio of its nearest step."""
    spread = job.weights_bytes + job.tuned_state_bytes + job.activation_bytes
    estimated = -(-spread // gpus) + job.prompt_state_bytes
    return estimated if job.memory_ratio == 1.0 else round(estimated * job.memory_ratio)


def _fits(job: JobCost, gpus: int) -> bool:
    return memory_per_gpu(job, gpus) <= job.cost.memory_gb * 1e9


def gpus_needed(job: JobCost) -> int | None:
    """The fewest GPUs of ``cost.gpu``'s memory (``cost.memory_gb``) that hold the job: 1, or up
    to MAX_GPUS when its ``model.device_map`` spreads it (auto, balanced, ...); None if it does
    not fit."""
    spread = job.config is not None and job.config.model.device_map in DEVICE_MAP_STRATEGIES
    return next((k for k in range(1, MAX_GPUS + 1 if spread else 2) if _fits(job, k)), None)


def auto_grad_accum(cfg: Config) -> int:
    """``trainer.grad_accum=auto``: the fewest micro-batches (a divisor of
    ``trainer.batch_size``) with which the job's estimate fits ``cost.memory_gb`` on the
    GPUs its ``model.device_map`` may use (:func:`gpus_needed`); one example per micro-batch if
    none does (:func:`memory_warning` then names the switches that would make it fit); 1 if
    there is no estimate (a model of unknown shape, a task not registered here: what the run
    then reports itself). Same FLOPs whatever the count, and the same gradient at
    dropout 0; with dropout the masks follow the micro-batches (the same in distribution only). A
    ``cost.calibration`` it cannot price from is refused (ValueError), not taken as no estimate."""
    t = cfg.trainer
    counts = divisors(t.batch_size)
    if cfg.cost.calibration is not None:  # a bad file is the user's mistake: say so, not 1
        load_calibration(cfg.cost.calibration)
    try:
        for n in counts:
            job = estimate(replace(cfg, trainer=replace(t, grad_accum=n)))
            if gpus_needed(job) is not None:
                return n
    except (ValueError, KeyError, TypeError, OSError):
        return 1
    return counts[-1]


def describe_grad_accum(cfg: Config) -> str:
    """``grad_accum auto → 16`` (or ``grad_accum 4``): the micro-batches of a step, and whether
    ``trainer.grad_accum=auto`` chose them."""
    t = cfg.trainer
    return f"grad_accum {'auto → ' if t.grad_accum_auto else ''}{t.grad_accum}"


def start_lines(cfg: Config) -> tuple[str | None, str | None]:
    """What a job logs as it starts, before loading anything: its micro-batches and memory
    estimate (None without an estimate), and :func:`memory_warning` if it does not fit one GPU
    of ``cost.memory_gb`` (None if it does)."""
    try:
        job = estimate(cfg)
    except (ValueError, KeyError, TypeError, OSError):
        return None, None
    t = cfg.trainer
    each = (
        f"{t.batch_size // t.grad_accum} example(s)"
        if t.batch_tokens is None
        else f"≤ {t.batch_tokens // t.grad_accum} padded input tokens"
    )
    info = (
        f"{describe_grad_accum(cfg)}: {t.grad_accum} micro-batch(es) of "
        f"{each} per step, memory ≈ {format_bytes(job.memory_bytes)} "
        f"(estimate; {cfg.cost.gpu}: {cfg.cost.memory_gb:g} GB)"
    )
    warning = memory_warning(job) if gpus_needed(job) is None else None
    return info, warning.strip() if warning else None


@dataclass(frozen=True)
class MemoryFix:
    """Switches with which a job fits its GPU, and what the job then needs."""

    overrides: tuple[str, ...]  # Hydra overrides, e.g. ("model.gradient_checkpointing=true",)
    gpus: int  # model.device_map=auto over this many GPUs (1: not spread)
    memory_bytes: int  # on the fullest GPU
    gpu_hours: float  # × gpus: the job holds every one of them while it runs


def memory_fixes(cfg: Config) -> list[MemoryFix]:
    """The smallest sets of memory switches with which the job fits ``cost.memory_gb``,
    found by re-estimating it with each set: no part of a set fits alone, each switch is at its
    smallest setting; fewest GPUs, then fewest switches, then fewest GPU-hours first.

    The switches (those the job does not use yet): ``model.dtype=bfloat16`` (weights and
    activations in 2 bytes), ``model.gradient_checkpointing=true`` (activations: each block's
    input only; 1.5 × the FLOPs), ``trainer.grad_accum=N`` (batch_size / N examples per
    micro-batch; N divides batch_size), ``model.device_map=auto`` over 2..MAX_GPUS GPUs
    (:func:`memory_per_gpu`; the job holds all of them, so k × the GPU-hours).
    """
    model, trainer = cfg.model, cfg.trainer
    batch = trainer.batch_size
    accums = [n for n in divisors(batch) if n > trainer.grad_accum]
    spread = model.device_map in DEVICE_MAP_STRATEGIES  # already spread by the job itself
    switches = [
        *(["model.dtype=bfloat16"] if model.dtype == "float32" else []),
        *([] if model.gradient_checkpointing else ["model.gradient_checkpointing=true"]),
        *(["trainer.grad_accum"] if accums else []),
        *([] if spread else ["model.device_map=auto"]),
    ]
    fixes: list[tuple[set[str], MemoryFix]] = []
    for n in range(1, len(switches) + 1):
        for chosen in itertools.combinations(switches, n):
            if any(found <= set(chosen) for found, _ in fixes):
                continue  # a part of this set fits already
            base = replace(
                cfg,
                model=replace(
                    model,
                    dtype="bfloat16" if "model.dtype=bfloat16" in chosen else model.dtype,
                    gradient_checkpointing=model.gradient_checkpointing
                    or "model.gradient_checkpointing=true" in chosen,
                    device_map="auto" if "model.device_map=auto" in chosen else model.device_map,
                ),
            )
            if "model.device_map=auto" in chosen:
                gpu_counts = range(2, MAX_GPUS + 1)
            else:
                gpu_counts = range(1, MAX_GPUS + 1 if spread else 2)
            options = []  # (gpus, grad_accum, job): the fewest GPUs, then the largest micro-batch
            for accum in accums if "trainer.grad_accum" in chosen else [trainer.grad_accum]:
                job = estimate(replace(base, trainer=replace(trainer, grad_accum=accum)))
                gpus = next((k for k in gpu_counts if _fits(job, k)), None)
                if gpus is not None:
                    options.append((gpus, accum, job))
            if not options:
                continue
            gpus, accum, job = min(options, key=lambda o: o[:2])
            overrides = tuple(
                f"trainer.grad_accum={accum}" if x == "trainer.grad_accum" else x for x in chosen
            )
            fix = MemoryFix(overrides, gpus, memory_per_gpu(job, gpus), gpus * job.gpu_hours)
            fixes.append((set(chosen), fix))
    return sorted(
        (fix for _, fix in fixes),
        key=lambda f: (f.gpus, len(f.overrides), f.gpu_hours, f.memory_bytes),
    )


def describe_fix(fix: MemoryFix, job: JobCost) -> str:
    """``trainer.grad_accum=16 (≈ 64.11 GB)``; with what the fix adds: GPUs, GPU-hours."""
    gpus = f" on {fix.gpus} GPUs" if fix.gpus > 1 else ""
    each = " each" if fix.gpus > 1 else ""
    ratio = fix.gpu_hours / job.gpu_hours if job.gpu_hours else 1.0
    hours = f", {ratio:.3g}× the GPU-h" if abs(ratio - 1) > 1e-9 else ""
    return f"{' '.join(fix.overrides)}{gpus} (≈ {format_bytes(fix.memory_bytes)}{each}{hours})"


def memory_warning(job: JobCost) -> str | None:
    """A warning if the job does not fit one GPU of ``cost.memory_gb``, with the switches
    that make it fit (:func:`memory_fixes`); a note if its own ``model.device_map`` needs
    several; None if it fits one."""
    gpus, c = gpus_needed(job), job.cost
    if gpus == 1:
        return None
    if gpus is not None:
        return (
            f"  note: model.device_map={job.config.model.device_map} must spread it over "
            f">= {gpus} GPUs of {c.memory_gb:g} GB (≈ {format_bytes(memory_per_gpu(job, gpus))} "
            f"each; {gpus}× the GPU-h)"
        )
    fixes = memory_fixes(job.config) if job.config is not None else []
    fits = (
        f"fits with: {' | '.join(describe_fix(f, job) for f in fixes)}"
        if fixes
        else f"no combination of the memory switches fits it, even on {MAX_GPUS} GPUs"
    )
    return (
        f"  WARNING: needs ≈ {format_bytes(memory_per_gpu(job))}, more than the {c.memory_gb:g} GB "
        f"of one GPU ({c.gpu}; cost.gpu, cost.gpu_memory_gb); {fits}"
    )


def format_bytes(n: float) -> str:
    """``1.23 GB``, or ``4.567 MB`` below 10 MB."""
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.3f} MB"
