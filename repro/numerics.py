"""The same bits from the same command on any x86-64 CPU with AVX2: which kernels a CPU run uses.

PyTorch picks its CPU kernels by what the CPU can do, on three levels that each sum in their own
order: ATen's vectorised ops (``ATEN_CPU_CAPABILITY``: default, avx2, avx512), MKL's matmuls
(``MKL_CBWR``: its code path per instruction set) and oneDNN's (``ONEDNN_MAX_CPU_ISA``). So one
command gave other bits on an AVX-512 machine than on an AVX2 one, and after a few hundred steps
other scores: re-running the toy sweeps on another machine changed 10 of 264 scores (one
16.0 → 48.5). Measured on one job: ``ATEN_CPU_CAPABILITY=default`` or ``MKL_CBWR=COMPATIBLE``
change the loss from step 25 on; 1 or 2 threads, ``MKL_CBWR=AVX2`` and ``AVX2,STRICT`` do not.

:func:`pin_cpu_numerics` (called when ``repro`` is imported, before any tensor op) pins all three
to AVX2, which every x86-64 CPU since 2013-2015 has, and MKL to its strict mode (matmuls whose
bits do not depend on the thread count). A variable the user set is kept; ``REPRO_CPU_NUMERICS=
native`` pins nothing (each CPU's fastest kernels). A CPU without AVX2, a non-x86 CPU (ARM,
Apple silicon) or a machine whose CPU we cannot read (no ``/proc/cpuinfo``) is left native: its
bits are its own. GPUs are not touched: see docs/fidelity.md. What a run used is recorded in its
``result.json`` (``cpu_numerics``, :func:`repro.precision.cpu_numerics`).

This module loads no torch: pinning only works before torch computes anything.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

CPU_NUMERICS_ENV = "REPRO_CPU_NUMERICS"
CPU_NUMERICS_MODES = ("avx2", "native")  # the first is the default

# what ``avx2`` sets (each only where the user has not set it)
PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}

X86_64 = ("x86_64", "amd64")


def cpu_numerics_mode(environ: MutableMapping[str, str] = os.environ) -> str:
    """``REPRO_CPU_NUMERICS`` (``avx2`` when unset). Raises ValueError naming the bad value."""
    mode = environ.get(CPU_NUMERICS_ENV, CPU_NUMERICS_MODES[0]).strip().lower()
    if mode not in CPU_NUMERICS_MODES:
        raise ValueError(
            f"{CPU_NUMERICS_ENV}={environ[CPU_NUMERICS_ENV]!r}: allowed: "
            f"{', '.join(CPU_NUMERICS_MODES)} (avx2, the default, gives the same bits on every "
            "x86-64 CPU with AVX2; native uses each CPU's fastest kernels)"
        )
    return mode


def has_avx2(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> bool:
    """Whether this is an x86-64 CPU that says it has AVX2 (Linux's ``/proc/cpuinfo``)."""
    if (machine or platform.machine()).lower() not in X86_64:
        return False
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "avx2" in line.split(":", 1)[-1].split()
    return False


def pin_cpu_numerics(
    environ: MutableMapping[str, str] = os.environ, avx2: bool | None = None
) -> dict[str, str]:
    """Pin the CPU kernels to AVX2 unless ``REPRO_CPU_NUMERICS=native``, the CPU lacks AVX2 or
    the user set the variable; returns what it set. A bad ``REPRO_CPU_NUMERICS`` pins nothing
    here (an import does not fail): the job refuses it with one line (``cpu_numerics``)."""
    try:
        mode = cpu_numerics_mode(environ)
    except ValueError:
        return {}
    if mode == "native" or not (has_avx2() if avx2 is None else avx2):
        return {}
    pinned = {key: value for key, value in PINNED.items() if key not in environ}
    environ.update(pinned)
    return pinned
