"""What a dry run assumes to price a job: the ``cost`` group of the config (``repro.config``),
kept beside the GPU table it names (``repro.gpus``)."""

from __future__ import annotations

from dataclasses import dataclass

from repro.cli import check_positive_int
from repro.gpus import GPUS, get_gpu


@dataclass
class CostConfig:
    """What a dry run (``dry_run=true``) assumes to turn FLOPs into GPU-hours (docs/cluster.md):
    a GPU of ``repro.gpus.GPUS``, priced at its peak at the precision each job runs at
    (:meth:`peak_at`), under a utilisation that grows with the tokens of a step; or, with
    ``calibration``, the step times and memory ``benchmarks/gpu_check.py`` measured."""

    gpu: str = "A100"  # an entry of repro.gpus.GPUS: A100 (80 GB), A100-40GB, H100, H100-PCIe, H200
    # The table's dense peak at the job's precision (trainer.precision), overridden (TFLOP/s,
    # whatever the precision). A GPU outside the table needs it and gpu_memory_gb.
    peak_tflops: float | None = None
    # memory of one GPU in GB (10⁹ bytes, as printed), overriding the table's (A100: 80, whose
    # 80 GiB ≈ 85.9 GB leave the rest to the CUDA context and the allocator's slack): a job
    # needing more is flagged with the switches that make it fit. None: the table's (memory_gb).
    gpu_memory_gb: float | None = None
    # Fraction of the peak a large step sustains (MFU). ASSUMPTION, not measured here: a step of
    # n encoder tokens sustains utilisation × n / (n + half_utilisation_tokens) of the peak
    # (half of it at 8,192 tokens; a paper step, 32 × 612 tokens, 70 % of it). 0 = flat.
    utilisation: float = 0.4
    half_utilisation_tokens: int = 8192
    # A benchmarks/gpu_check.py JSON: price each job from the measured step of the nearest shape
    # (repro.calibration) instead of the assumed utilisation; None = assumed.
    calibration: str | None = None
    input_len: int | None = None  # encoder input tokens per example; None = the task's maximum
    target_len: int | None = None  # decoder tokens per example; None = the task's maximum

    def __post_init__(self) -> None:
        for key in ("peak_tflops", "gpu_memory_gb"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"cost.{key} must be > 0; got {value}")
        if self.gpu not in GPUS and (self.peak_tflops is None or self.gpu_memory_gb is None):
            get_gpu(self.gpu)  # refused, naming the table (a GPU outside it needs both keys)
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"cost.utilisation must be in (0, 1]; got {self.utilisation}")
        check_positive_int("cost.half_utilisation_tokens", self.half_utilisation_tokens, minimum=0)
        if self.calibration is not None and not str(self.calibration).strip():
            raise ValueError("cost.calibration must name a gpu_check.json file, or be null")
        for key in ("input_len", "target_len"):
            if getattr(self, key) is not None:
                check_positive_int(f"cost.{key}", getattr(self, key))

    @property
    def memory_gb(self) -> float:
        """Memory of one GPU in GB: ``gpu_memory_gb``, else the table's for ``gpu``."""
        return self.gpu_memory_gb if self.gpu_memory_gb is not None else GPUS[self.gpu].memory_gb

    def peak_at(self, precision: str) -> float:
        """Dense peak TFLOP/s at a resolved precision (bf16, tf32, fp32;
        ``repro.gpus.priced_precision``): ``peak_tflops``, else the table's for ``gpu``."""
        if self.peak_tflops is not None:
            return self.peak_tflops
        return GPUS[self.gpu].peak_tflops(precision)
