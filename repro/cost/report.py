"""What ``python -m repro.cost`` and ``dry_run=true`` print: one line per job (and its memory
warning), a sweep in groups of jobs that cost the same with a subtotal per model size, the LM
adaptation the jobs need, and the one total: the sum of those parts, written as that sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass

from repro.estimate import AdaptationCost, JobCost
from repro.memory import describe_grad_accum, format_bytes, memory_per_gpu, memory_warning
from repro.methods import get_method


def _micro(job: JobCost) -> str:
    """``grad_accum auto → 16``, or ``grad_accum 1`` for a job without its config."""
    return describe_grad_accum(job.config) if job.config is not None else "grad_accum ?"


def describe(job: JobCost) -> str:
    """One line per job, and a second if it does not fit its GPU
    (:func:`repro.memory.memory_warning`): what ``dry_run=true`` prints."""
    method = get_method(job.method)
    runs = (
        f"{len(job.tasks)} task(s) as one mixture × {job.steps} steps"
        if method.mixture
        else f"{len(job.tasks)} task(s) × {job.steps} steps"
    )
    tuned = (
        f", gradients + Adafactor state {format_bytes(job.tuned_state_bytes)}"
        if job.tuned_state_bytes
        else ""
    )
    saved = (
        f" | method={job.method}: all weights trained, saves ≈ {format_bytes(job.saved_bytes)} "
        f"(best/ + last/, a full copy per {'mixture' if method.mixture else 'task'})"
        if method.saves == "model"
        else f" | method=lora: {job.trainable_params:,} LoRA weights trained, saves ≈ "
        f"{format_bytes(job.saved_bytes)} (best/ + last/ adapters per task)"
        if method.saves == "adapter"
        else ""
    )
    measured = (
        f", measured ≈ {format_bytes(memory_per_gpu(job))} (× {job.memory_ratio:.3g}, "
        f"{job.rate.step.label})"
        if job.rate is not None and job.rate.step is not None
        else ""
    )
    line = (
        f"dry run {job.name}: {runs} | "
        f"params {job.params:,} | memory ≈ {format_bytes(job.memory_bytes)}{measured} "
        f"(weights {format_bytes(job.weights_bytes)}{tuned}, activations "
        f"{format_bytes(job.activation_bytes)}/micro-batch, {_micro(job)}){saved}"
        f" | {job.flops_per_step:.3e} FLOP/step | {job.total_flops:.3e} FLOP | "
        f"{job.gpu_hours:.2f} GPU-h {job.rate.basis}"
    )
    warning = memory_warning(job)
    return line if warning is None else f"{line}\n{warning}"


def describe_adaptation(a: AdaptationCost) -> str:
    """One line per size whose jobs need the suite's own LM adaptation first (its precision:
    conf/lm_adapt.yaml's ``lm_adapt.precision``)."""
    return (
        f"lm adaptation {a.size}: 1 run of {a.steps} steps "
        f"(writes step_{{{','.join(map(str, a.needed))}}}) | batch {a.batch_size} × "
        f"{a.input_len}/{a.target_len} tokens, all {a.params:,} weights trained | "
        f"{a.flops_per_step:.3e} FLOP/step | {a.total_flops:.3e} FLOP | "
        f"{a.gpu_hours:.2f} GPU-h {a.rate.basis}"
    )


def cents(hours: float) -> int:
    """GPU-hours as printed (two decimals), in hundredths."""
    return round(float(f"{hours:.2f}") * 100)


def describe_total(jobs: Sequence[JobCost], adaptations: Sequence[AdaptationCost] = ()) -> str:
    """The one total line: the GPU-hours of the jobs plus those of the LM adaptation they need,
    written as that sum (``total: T GPU-h = J for the n job(s) + A for LM adaptation (k
    size(s))``). J is the jobs' exact GPU-hours, rounded once (the per-size subtotals above it,
    each rounded alone, may add up to a hundredth or two off it); A is the sum of the LM
    adaptation lines as printed; T is J + A as printed, so the line adds up.
    """
    flops = sum(j.total_flops for j in jobs) + sum(a.total_flops for a in adaptations)
    part = cents(sum(j.gpu_hours for j in jobs))
    adapt = sum(cents(a.gpu_hours) for a in adaptations)
    peak = max((j.memory_bytes for j in jobs), default=0)
    parts = f"{part / 100:.2f} for the {len(jobs)} job(s)"
    if adaptations:
        parts += f" + {adapt / 100:.2f} for LM adaptation ({len(adaptations)} size(s))"
    return (
        f"total: {(part + adapt) / 100:.2f} GPU-h = {parts} | {flops:.3e} FLOP | "
        f"largest job memory ≈ {format_bytes(peak)}"
    )


# --- a sweep in groups -----------------------------------------------------------------------


@dataclass
class JobGroup:
    """Jobs of one model size and one value of each sweep axis that changes the cost."""

    size: str
    axes: tuple[str, ...]  # the axis overrides, e.g. ("prompt_len=100",)
    jobs: list[JobCost]

    @property
    def label(self) -> str:
        return " ".join((f"model={self.size}", *self.axes))

    @property
    def largest(self) -> JobCost:
        return max(self.jobs, key=lambda j: j.memory_bytes)


def _signature(job: JobCost) -> tuple:
    """What a group line shows of a job: jobs with equal signatures print alike."""
    return (
        job.size,
        job.tasks,
        job.steps,
        job.params,
        job.memory_bytes,
        job.flops_per_step,
        job.total_flops,
        job.method,
        job.saved_bytes,
        astuple(job.cost),
    )


def group_jobs(jobs: Sequence[JobCost], overrides: Sequence[Sequence[str]]) -> list[JobGroup]:
    """The jobs of a sweep grouped by model size, then by the sweep's other axes (the override
    keys whose value differs between jobs) in sweep order, leaving out every axis along which
    the jobs cost the same (a seed, an initialiser): within a group all jobs print alike.
    Sizes, and groups within a size, in sweep order.

    Args:
        overrides: each job's overrides (``key=value``), as the sweeper expanded them.
    """
    values = [dict(o.split("=", 1) for o in job if "=" in o) for job in overrides]
    keys = dict.fromkeys(k for v in values for k in v)
    axes = [k for k in keys if k != "model" and len({v.get(k) for v in values}) > 1]

    def split(axes: Sequence[str]) -> dict[tuple[str, ...], list[JobCost]]:
        groups: dict[tuple[str, ...], list[JobCost]] = {}
        for job, v in zip(jobs, values, strict=True):
            key = (job.size, *(f"{k}={v[k]}" for k in axes if k in v))
            groups.setdefault(key, []).append(job)
        return groups

    for axis in reversed(list(axes)):  # the last axes first: seeds usually come last
        fewer = [k for k in axes if k != axis]
        if all(len({_signature(j) for j in g}) == 1 for g in split(fewer).values()):
            axes = fewer
    groups = [JobGroup(key[0], key[1:], group) for key, group in split(axes).items()]
    sizes = list(dict.fromkeys(g.size for g in groups))
    return sorted(groups, key=lambda g: sizes.index(g.size))  # stable: sweep order within


def describe_group(group: JobGroup, width: int = 0) -> str:
    """One line per group: its jobs, steps, memory of its largest job, FLOPs and GPU-hours."""
    job = group.largest
    flops = sum(j.total_flops for j in group.jobs)
    hours = sum(j.gpu_hours for j in group.jobs)
    return (
        f"{group.label + ':':<{width + 1}} {len(group.jobs)} job(s) × {len(job.tasks)} task(s) × "
        f"{job.steps} steps | params {job.params:,} | memory ≈ {format_bytes(job.memory_bytes)} "
        f"({_micro(job)}) | "
        f"{flops:.3e} FLOP | {hours:.2f} GPU-h"
    )


def describe_subtotal(size: str, jobs: Sequence[JobCost]) -> str:
    """The jobs of one model size."""
    flops = sum(j.total_flops for j in jobs)
    hours = sum(j.gpu_hours for j in jobs)
    peak = max(j.memory_bytes for j in jobs)
    return (
        f"subtotal model={size}: {len(jobs)} job(s) | {flops:.3e} FLOP | {hours:.2f} GPU-h | "
        f"largest job memory ≈ {format_bytes(peak)}"
    )


def token_unit(causal: Iterable[bool]) -> str:
    """What the n of the utilisation model counts, for jobs that are causal or not: a T5's
    encoder tokens, a decoder-only model's whole sequences (``JobCost.step_tokens``)."""
    kinds = set(causal)
    if kinds == {True}:
        return "tokens"
    return "encoder tokens" if True not in kinds else "tokens (T5: encoder tokens)"


def describe_pricing(jobs: Sequence[JobCost]) -> str:
    """What a sweep is priced on: ``A100: 80 GB, bf16 peak 312 TFLOP/s × utilisation 40% ×
    n/(n + 8192) for n encoder tokens a step`` (or the calibration; a causal model's n counts
    all the tokens of its sequences)."""
    if len({astuple(j.cost) for j in jobs}) > 1:
        return "cost.* differs between the groups"
    c = jobs[0].cost
    precisions = sorted({j.precision for j in jobs})
    if c.calibration is not None:
        return f"{c.gpu}: {c.memory_gb:g} GB; {'/'.join(precisions)} calibrated ({c.calibration})"
    half, unit = c.half_utilisation_tokens, token_unit(j.family == "causal" for j in jobs)
    model = (
        f"{c.utilisation:.0%} × n/(n + {half}) for n {unit} a step"
        if half
        else (f"{c.utilisation:.0%}")
    )
    peaks = ", ".join(f"{p} peak {c.peak_at(p):g} TFLOP/s" for p in precisions)
    return f"{c.gpu}: {c.memory_gb:g} GB, {peaks} × utilisation {model}"


def describe_groups(jobs: Sequence[JobCost], overrides: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a grouped sweep: a header with the GPU assumed, per size its groups (each
    followed by its memory warning, if any) and, if it has several, their subtotal."""
    groups = group_jobs(jobs, overrides)
    axes = dict.fromkeys(a.split("=", 1)[0] for g in groups for a in g.axes)
    gpu = describe_pricing(jobs)
    lines = [
        f"{len(jobs)} job(s) in {len(groups)} group(s) of equal cost, by "
        f"{', '.join(['model', *axes])} ({gpu}; --jobs: one line per job)"
    ]
    width = max(len(g.label) for g in groups)
    for size in dict.fromkeys(g.size for g in groups):
        of_size = [g for g in groups if g.size == size]
        for group in of_size:
            lines.append(describe_group(group, width))
            warning = memory_warning(group.largest)
            if warning is not None:
                lines.append(warning)
        if len(of_size) > 1:
            lines.append(describe_subtotal(size, [j for g in of_size for j in g.jobs]))
    return lines
