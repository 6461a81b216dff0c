"""A sweep priced packed (``hydra/launcher=packed``, :mod:`repro.pack`) against unpacked:
``python -m repro.cost --packed``.

Unpacked is the sweep as ``repro.cost`` prices it, job by job. A pack runs at its first member's
rate moved along the one utilisation model (``repro.calibration.utilisation_at``, an ASSUMPTION:
``cost.utilisation × n / (n + cost.half_utilisation_tokens)`` for n encoder tokens a step) to
the tokens of all its members: a paper job (batch 32 × ~612 tokens = 19.6k) is at 70 % of
``cost.utilisation``, a pack of 15 at 97 %; with a calibration, the measured rate moves the same
way. Packing also saves each job's start-up, model load and evaluation passes, which this leaves
out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from repro.config import Config
from repro.cost.report import cents, token_unit
from repro.estimate import estimate, lengths, rate_at
from repro.memory import format_bytes
from repro.pack.plan import pack_memory, plan_packs
from repro.tasks import task_names


@dataclass
class PackedPrice:
    """A sweep priced unpacked (one process per job) and packed (one per pack): an estimate."""

    jobs: int
    packs: int
    hours_unpacked: float
    hours_packed: float
    peak_unpacked: int  # bytes on the fullest GPU
    peak_packed: int


def _step_tokens(cfg: Config, prompt_len: int) -> int:
    """The tokens of a step (as ``JobCost.step_tokens`` counts them): its encoder tokens, or a
    causal model's whole sequences."""
    causal = cfg.model.family == "causal"
    per_task = [lengths(replace(cfg, prompt_len=prompt_len), n) for n in task_names(cfg.task.name)]
    return cfg.trainer.batch_size * max(te + td if causal else te for te, td in per_task)


def price_packed(configs: Sequence[Config], budget_gb: float | None = None) -> PackedPrice:
    """GPU-hours, processes and peak memory per GPU of a sweep run solo and packed
    (:func:`repro.pack.plan.plan_packs`). Unpacked, each job is priced as ``repro.cost`` prices
    it (its ``gpu_hours``); a pack at its first member's rate moved to the pack's tokens along
    the utilisation model (:func:`repro.estimate.rate_at`). A packed member pays for its pack's
    longest prompt (left padding)."""
    jobs = [estimate(c) for c in configs]
    unpacked = sum(j.gpu_hours for j in jobs)
    packs = plan_packs(configs, budget_gb)
    packed = 0.0
    for pack in packs:
        members = [configs[i] for i in pack]
        longest = max(c.prompt_len for c in members)
        flops = sum(estimate(replace(c, prompt_len=longest)).total_flops for c in members)
        tokens = sum(_step_tokens(c, longest) for c in members)
        packed += flops / rate_at(jobs[pack[0]], tokens) / 3600
    return PackedPrice(
        jobs=len(configs),
        packs=len(packs),
        hours_unpacked=unpacked,
        hours_packed=packed,
        peak_unpacked=max(j.memory_bytes for j in jobs),
        peak_packed=max(pack_memory([configs[i] for i in pack]) for pack in packs),
    )


def describe_packed(configs: Sequence[Config]) -> list[str]:
    """The packed-vs-unpacked lines of a sweep: one per model size, then the total."""
    cost = configs[0].cost
    half = cost.half_utilisation_tokens
    model = f"{cost.utilisation:.0%} × n/(n + {half})" if half else f"{cost.utilisation:.0%} flat"
    rate = (
        f"calibrated ({cost.calibration}), moved along the utilisation model {model}"
        if cost.calibration is not None
        else f"utilisation assumed {model}"
    )
    unit = token_unit(c.model.family == "causal" for c in configs)
    lines = [
        f"packed vs unpacked (not in the total; ESTIMATE: {rate} for n {unit} per step, "
        "both ways; unpacked = the jobs' part of the total above, by size; LM adaptation is not "
        f"packed; {cost.gpu}, {cost.memory_gb:g} GB per GPU; start-up, loading and evaluation "
        "not counted; docs/packing.md):"
    ]
    sizes = list(dict.fromkeys(c.model.size for c in configs))
    prices = [(s, price_packed([c for c in configs if c.model.size == s])) for s in sizes]
    if len(sizes) > 1:
        total = PackedPrice(
            jobs=sum(p.jobs for _, p in prices),
            packs=sum(p.packs for _, p in prices),
            # exact sums, rounded once as printed: "all" unpacked is the jobs' part of the total
            hours_unpacked=sum(p.hours_unpacked for _, p in prices),
            hours_packed=sum(p.hours_packed for _, p in prices),
            peak_unpacked=max(p.peak_unpacked for _, p in prices),
            peak_packed=max(p.peak_packed for _, p in prices),
        )
        prices.append(("all", total))
    for size, price in prices:
        saved = (cents(price.hours_unpacked) - cents(price.hours_packed)) / 100  # as printed
        share = saved / price.hours_unpacked if price.hours_unpacked else 0.0
        lines.append(
            f"  model={size}: unpacked {price.jobs} process(es), {price.hours_unpacked:.2f} GPU-h, "
            f"peak ≈ {format_bytes(price.peak_unpacked)}/GPU | packed {price.packs} process(es), "
            f"{price.hours_packed:.2f} GPU-h, peak ≈ {format_bytes(price.peak_packed)}/GPU | saves "
            f"{saved:.2f} GPU-h ({share:.0%})"
        )
    return lines
