"""The FLOP/s a job is priced at: assumed, or measured on a GPU (``cost.calibration``).

**Assumed** (no calibration): the GPU's dense peak at the precision the job runs at
(``cost.peak_at``, ``repro.gpus``) × :func:`utilisation_at` the encoder tokens of its step, the
one utilisation model of every price (a job, a sweep, an LM adaptation, a memory fix, a pack).

**Calibrated**: ``benchmarks/gpu_check.py`` times steps on a GPU and writes a
``gpu_check.json`` (schema 1); ``cost.calibration`` or ``python -m repro.cost --calibration
<gpu_check.json>`` prices from it. Only steps with status ``measured`` count. A job is priced
from the nearest of them (:meth:`Calibration.nearest`): the same precision and gradient
checkpointing first, then the nearest parameter count (log distance), then the same weights'
dtype. Its hours are its FLOPs over that step's achieved FLOP/s (``flops_per_step /
seconds_per_step``: a job of exactly the measured shape takes steps × ``seconds_per_step``); its
memory is the estimate × that step's measured/estimated ratio. Only when no step was measured at
the job's precision is another's used, at its MFU of the job's peak (the achieved FLOP/s × the
ratio of the two peaks), and the line says so.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repro.cost_config import CostConfig
from repro.gpus import GPUS, gpu_of_device


def utilisation_at(tokens: int, cost: CostConfig) -> float:
    """The fraction of the peak a step holding ``tokens`` encoder tokens sustains: an ASSUMPTION
    (nothing here measured it), ``cost.utilisation × n / (n + cost.half_utilisation_tokens)``,
    or ``cost.utilisation`` flat when that is 0. The one utilisation model: every GPU-hour of a
    job, a sweep, an LM adaptation, a memory fix and a pack (:mod:`repro.cost.packed`) is priced
    by it, so a sweep's total and its unpacked price are the same number."""
    half = cost.half_utilisation_tokens
    return cost.utilisation * (tokens / (tokens + half) if half else 1.0)


@dataclass(frozen=True)
class Rate:
    """The FLOP/s a job is priced at, and how that was found (what its line says)."""

    flops_per_second: float
    basis: str  # "at 28% of 312 TFLOP/s (A100, bf16; ...)" or "calibrated on base bf16 (...)"
    memory_ratio: float = 1.0  # measured / estimated memory (calibration); 1: the estimate
    step: MeasuredStep | None = None  # the measured step it was priced from; None: assumed


def job_rate(
    cost: CostConfig,
    precision: str,
    step_tokens: int,
    params: int,
    checkpointing: bool = False,
    model_dtype: str = "float32",
) -> Rate:
    """The FLOP/s of a job: its GPU's peak at ``precision`` × :func:`utilisation_at` its
    ``step_tokens``, or, with ``cost.calibration``, the achieved FLOP/s and memory ratio of the
    nearest measured step (:func:`calibrated_rate`)."""
    if cost.calibration is not None:
        calibration = load_calibration(cost.calibration)
        return calibrated_rate(
            calibration, params, precision, checkpointing, model_dtype, cost.peak_at
        )
    u, peak = utilisation_at(step_tokens, cost), cost.peak_at(precision)
    half = cost.half_utilisation_tokens
    model = f"{cost.utilisation:.0%} × n/(n + {half})" if half else "flat"
    return Rate(
        peak * 1e12 * u,
        f"at {u:.1%} of {peak:g} TFLOP/s ({cost.gpu}, {precision}; utilisation {model}, "
        f"n = {step_tokens:,} encoder tokens/step)",
    )


# --- a gpu_check.json ---------------------------------------------------------------------------

SCHEMA = 1
PRECISIONS = ("bf16", "tf32", "fp32")  # what a step was measured at


@dataclass(frozen=True)
class MeasuredStep:
    """One ``steps`` entry of a gpu_check.json with status ``measured``."""

    size: str
    params: int
    precision: str  # bf16 | tf32 | fp32
    model_dtype: str  # float32 | bfloat16
    gradient_checkpointing: bool
    seconds_per_step: float
    flops_per_step: int  # repro.estimate.step_flops of the batches computed
    memory_ratio: float | None  # peak memory measured / estimated; None: not measured

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_step / self.seconds_per_step

    @property
    def label(self) -> str:
        """``base bf16``, ``xxl bf16 bfloat16 weights checkpointed``."""
        weights = " bfloat16 weights" if self.model_dtype != "float32" else ""
        ckpt = " checkpointed" if self.gradient_checkpointing else ""
        return f"{self.size} {self.precision}{weights}{ckpt}"


@dataclass(frozen=True)
class Calibration:
    """What a gpu_check.json measured: on which device, and the measured steps."""

    path: str  # as the user gave it (what the lines print)
    device: str  # e.g. NVIDIA H100 80GB HBM3
    gpu: str | None  # its repro.gpus name; None for a GPU the table lacks
    steps: tuple[MeasuredStep, ...]

    def nearest(
        self, params: int, precision: str, checkpointing: bool, model_dtype: str
    ) -> MeasuredStep:
        """The measured step a job of this shape is priced from (module docstring)."""

        def distance(m: MeasuredStep) -> tuple:
            return (
                m.precision != precision,
                m.gradient_checkpointing != checkpointing,
                abs(math.log(m.params / params)),
                m.model_dtype != model_dtype,
            )

        return min(self.steps, key=distance)


def calibrated_rate(
    calibration: Calibration,
    params: int,
    precision: str,
    checkpointing: bool,
    model_dtype: str,
    peak_at: Callable[[str], float] | None = None,
) -> Rate:
    """The rate of a job of ``params`` frozen parameters run at ``precision``, from the nearest
    measured step. ``peak_at(precision)``: TFLOP/s of a GPU the table lacks (``cost.peak_at``),
    needed only when the step's precision is not the job's."""
    step = calibration.nearest(params, precision, checkpointing, model_dtype)
    where = f"{calibration.path}, {calibration.gpu or calibration.device}"
    rate = step.flops_per_second
    basis = f"calibrated on {step.label} ({where}): {rate / 1e12:.0f} TFLOP/s achieved"
    if step.precision != precision:  # none measured at the job's precision: its MFU, scaled
        table = GPUS.get(calibration.gpu) if calibration.gpu else None
        peak = table.peak_tflops if table is not None else peak_at
        rate *= peak(precision) / peak(step.precision)
        basis += (
            f", scaled to the {precision} peak: {rate / 1e12:.0f} TFLOP/s (none at {precision})"
        )
    ratio = 1.0 if step.memory_ratio is None else step.memory_ratio
    return Rate(rate, basis, memory_ratio=ratio, step=step)


def load_calibration(path: str) -> Calibration:
    """Read and check a gpu_check.json; raises ValueError in one line naming the file."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError as err:
        raise ValueError(f"cost.calibration={path!r}: cannot read it ({err.strerror})") from None
    return _load(str(path), str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load(path: str, resolved: str, mtime_ns: int, size: int) -> Calibration:
    """One read per file version: a sweep estimates its jobs many times (memory fixes, packs)."""
    where = f"cost.calibration={path!r}"
    try:
        data = json.loads(Path(resolved).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{where}: not a benchmarks/gpu_check.py result of schema {SCHEMA} (schema {got!r})"
        )
    device = data.get("device") if isinstance(data.get("device"), dict) else {}
    entries = data.get("steps") if isinstance(data.get("steps"), list) else []
    measured = [e for e in entries if isinstance(e, dict) and e.get("status") == "measured"]
    if not data.get("gpu_measured") or not measured:
        raise ValueError(
            f"{where}: no step was measured on a GPU (device {device.get('name', '?')}, "
            f"gpu_measured {data.get('gpu_measured')}, {len(measured)} measured step(s)); run "
            "benchmarks/gpu_check.py on the GPU to price from"
        )
    name = str(device.get("name") or "?")
    gpu = device.get("gpu") or (gpu_of_device(name) if device.get("type") == "cuda" else None)
    steps = tuple(
        _measured_step(e, i, where)
        for i, e in enumerate(entries)
        if isinstance(e, dict) and e.get("status") == "measured"
    )
    return Calibration(path=path, device=name, gpu=gpu if gpu in GPUS else None, steps=steps)


def _measured_step(entry: dict, index: int, where: str) -> MeasuredStep:
    try:
        step = MeasuredStep(
            size=str(entry["size"]),
            params=int(entry["params"]),
            precision=str(entry["precision"]),
            model_dtype=str(entry.get("model_dtype") or "float32"),
            gradient_checkpointing=bool(entry.get("gradient_checkpointing", False)),
            seconds_per_step=float(entry["seconds_per_step"]),
            flops_per_step=int(entry["flops_per_step"]),
            memory_ratio=None
            if entry.get("memory_ratio") is None
            else float(entry["memory_ratio"]),
        )
    except KeyError as err:
        raise ValueError(f"{where}: steps[{index}] is measured but has no {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{where}: steps[{index}] has a value that is not a number: {err}"
        ) from None
    good = (
        step.params > 0
        and step.precision in PRECISIONS
        and step.seconds_per_step > 0
        and step.flops_per_step > 0
        and (step.memory_ratio is None or step.memory_ratio > 0)
    )
    if not good:
        raise ValueError(
            f"{where}: steps[{index}] ({step.label}) needs params, seconds_per_step and "
            f"flops_per_step > 0 and a precision of {', '.join(PRECISIONS)}"
        )
    return step
