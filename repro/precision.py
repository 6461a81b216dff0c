"""How a job computes: ``trainer.precision`` resolved on the device the job runs on, and the
context that applies it to every forward, backward and evaluation of the run.

- ``bf16``: bf16 autocast, as the official code's T5X ``activation_dtype`` (the paper is silent):
  matmuls and their saved activations in bf16; the prompt, its gradient, the optimizer state and
  the loss stay fp32 (autocast runs softmax, log-softmax and the loss in fp32). On CUDA, TF32 for
  any fp32 matmul autocast leaves.
- ``tf32``: fp32 activations, fp32 matmuls on CUDA in TF32 (10-bit mantissa inputs, fp32
  accumulation); on a CPU there is no TF32: fp32.
- ``fp32``: strict IEEE fp32 everywhere (PyTorch's default on CUDA).
- ``auto`` (the default): ``bf16`` on a CUDA device that supports it, else ``fp32``.

``model.dtype`` (how the frozen weights are stored) is a separate key. Only ``bf16`` and ``tf32``
on CUDA change a CPU run: on a CPU, ``auto`` and ``tf32`` are the plain fp32 of before.
"""

from __future__ import annotations

import logging
import os

import torch

from repro.numerics import PINNED, cpu_numerics_mode
from repro.trainer_config import PRECISIONS

log = logging.getLogger(__name__)


def supports_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively: a CPU does (slowly without AMX/AVX512-BF16), a CUDA
    device from Ampere on."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def resolve_precision(requested: str, device: torch.device) -> str:
    """``trainer.precision`` → the precision a run on ``device`` uses: ``bf16``, ``tf32`` or
    ``fp32``. Raises ValueError for a value outside :data:`PRECISIONS` or ``bf16`` on a GPU
    without it."""
    if requested not in PRECISIONS:
        raise ValueError(
            f"trainer.precision={requested!r} is not allowed; choose one of: {', '.join(PRECISIONS)}"
        )
    if requested == "auto":
        return "bf16" if device.type == "cuda" and supports_bf16(device) else "fp32"
    if requested == "bf16" and not supports_bf16(device):
        raise ValueError(
            f"trainer.precision=bf16: {device_name(device)} has no bf16; use trainer.precision="
            "auto, tf32 or fp32"
        )
    if requested == "tf32" and device.type != "cuda":
        log.warning("trainer.precision=tf32 means nothing on %s (TF32 is CUDA's): fp32", device)
        return "fp32"
    return requested


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3`` for a CUDA device, else its type (``cpu``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


class Precision:
    """The context a run computes in (reusable: enter it around every step and evaluation).

    ``bf16`` enters ``torch.autocast(dtype=bfloat16)``. On CUDA, fp32 matmuls run in TF32 inside
    ``bf16`` and ``tf32`` and in IEEE fp32 inside ``fp32``, whatever was set globally; the
    previous setting is restored on leaving. On a CPU nothing global is touched.
    """

    def __init__(self, name: str, device: torch.device | str) -> None:
        if name not in PRECISIONS[1:]:
            raise ValueError(f"a resolved precision is one of {PRECISIONS[1:]}; got {name!r}")
        self.name = name
        self.device = torch.device(device)
        self._saved: list[tuple[str, torch.autocast | None]] = []

    @property
    def tf32(self) -> bool:
        return self.device.type == "cuda" and self.name in ("bf16", "tf32")

    def __enter__(self) -> Precision:
        before = _matmul_tf32(self.tf32) if self.device.type == "cuda" else None
        autocast = None
        if self.name == "bf16":
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
            autocast.__enter__()
        self._saved.append((before, autocast))
        return self

    def __exit__(self, *exc) -> None:
        before, autocast = self._saved.pop()
        if autocast is not None:
            autocast.__exit__(*exc)
        if before is not None:
            _set_matmul_precision(before)

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, {str(self.device)!r})"


def _matmul_tf32(enabled: bool) -> str:
    """Allow (or not) TF32 in CUDA fp32 matmuls; returns the previous setting."""
    before = _get_matmul_precision()
    _set_matmul_precision("tf32" if enabled else "ieee")
    return before


def _get_matmul_precision() -> str:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: the new API (do not mix the two)
        return matmul.fp32_precision
    return "tf32" if matmul.allow_tf32 else "ieee"


def _set_matmul_precision(value: str) -> None:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = value
    else:
        matmul.allow_tf32 = value == "tf32"


def cpu_numerics() -> dict:
    """Which CPU kernels this process computes with (``result.json``'s ``cpu_numerics``): ATen's
    capability as torch reports it, MKL's and oneDNN's variables, the thread count and whether
    :mod:`repro.numerics` pinned them. Raises ValueError for a bad ``REPRO_CPU_NUMERICS``."""
    aten = torch.backends.cpu.get_cpu_capability()
    pinned = aten == "AVX2" and all(os.environ.get(key) == value for key, value in PINNED.items())
    return {
        "mode": cpu_numerics_mode(),
        "pinned": pinned,
        "aten": aten,
        **{key.lower(): os.environ.get(key) for key in PINNED if key != "ATEN_CPU_CAPABILITY"},
        "threads": torch.get_num_threads(),
    }
