"""The GPUs ``repro.cost`` prices on: memory and dense peak TFLOP/s per precision, from NVIDIA's
spec sheets (the tensor-core figures *without* structured sparsity, which halves nothing in a
dense T5 and which the sheets print first with an asterisk).

A job is priced at the peak of the precision it will run at on that GPU (:func:`priced_precision`:
``trainer.precision=auto`` is bf16 on every GPU here), so forcing ``trainer.precision=fp32`` on
an A100 costs 16× the bf16 price at equal utilisation. ``cost.peak_tflops`` and
``cost.gpu_memory_gb`` override the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from repro.trainer_config import PRECISIONS

# What a job runs at on a GPU for each trainer.precision (repro.precision.resolve_precision on a
# CUDA device with bf16, as every GPU of the table is).
_ON_A_GPU = {"auto": "bf16", "bf16": "bf16", "tf32": "tf32", "fp32": "fp32"}


@dataclass(frozen=True)
class Gpu:
    """One GPU model: its memory (GB, 10⁹ bytes) and dense peak TFLOP/s per precision."""

    name: str
    memory_gb: float
    fp32: float  # CUDA-core FP32
    tf32: float  # tensor-core TF32, dense
    bf16: float  # tensor-core BF16, dense
    source: str

    def peak_tflops(self, precision: str) -> float:
        """Dense peak TFLOP/s at a resolved precision (``bf16``, ``tf32`` or ``fp32``)."""
        if precision not in ("bf16", "tf32", "fp32"):
            raise ValueError(f"no peak for precision {precision!r}; one of bf16, tf32, fp32")
        return getattr(self, precision)


_A100 = "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/a100), SXM4 80GB"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100)"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200), SXM"

GPUS = MappingProxyType(
    {
        "A100": Gpu("A100", 80.0, fp32=19.5, tf32=156.0, bf16=312.0, source=_A100),
        "A100-40GB": Gpu("A100-40GB", 40.0, fp32=19.5, tf32=156.0, bf16=312.0, source=_A100),
        "H100": Gpu("H100", 80.0, fp32=67.0, tf32=494.7, bf16=989.4, source=_H100 + ", SXM5"),
        "H100-PCIe": Gpu(
            "H100-PCIe", 80.0, fp32=51.0, tf32=378.0, bf16=756.0, source=_H100 + ", PCIe"
        ),
        "H200": Gpu("H200", 141.0, fp32=67.0, tf32=494.7, bf16=989.4, source=_H200),
    }
)


def get_gpu(name: str) -> Gpu:
    """The table's entry; raises ValueError naming the GPUs it holds."""
    if name not in GPUS:
        raise ValueError(
            f"cost.gpu={name!r} is not in the GPU table; choose one of: {', '.join(GPUS)} (or give "
            "cost.peak_tflops and cost.gpu_memory_gb for another GPU)"
        )
    return GPUS[name]


def priced_precision(requested: str) -> str:
    """The precision a job with ``trainer.precision=requested`` runs at on a GPU of the table."""
    if requested not in PRECISIONS:
        raise ValueError(
            f"trainer.precision={requested!r} is not allowed; choose one of: {', '.join(PRECISIONS)}"
        )
    return _ON_A_GPU[requested]


def gpu_of_device(device_name: str) -> str | None:
    """The table's name for a CUDA device name (``torch.cuda.get_device_name``), e.g.
    ``NVIDIA H100 80GB HBM3`` → ``H100``; None for a GPU the table lacks."""
    name = device_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name:
        return "H100-PCIe" if "PCIE" in name else "H100"
    if "A100" in name:
        return "A100-40GB" if "40GB" in name else "A100"
    return None
