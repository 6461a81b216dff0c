"""The trainer's config group (conf/trainer/, ``trainer.*``): the loop and its Adafactor.

Steps, batches and their micro-batches (``grad_accum``, ``auto`` resolved when the config is
loaded), evaluation and logging cadence, the device, and ``trainer.optimizer.*``, each checked in
``__post_init__`` like the other groups of :class:`repro.config.Config`. The optimizer's ranges
live in :func:`check_optimizer_hparams`, which ``repro.optim.Adafactor`` runs too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar, Union

from repro.cli import check_choice, check_positive_int
from repro.factoring import parse_factored

BATCHINGS = ("random", "bucketed")
GRAD_ACCUM_AUTO = "auto"  # trainer.grad_accum: the fewest micro-batches that fit the GPU

# What `trainer.device` (and `model.device_map`, as one device) may name: auto, or a torch device
# type with an optional index.
# trainer.precision (repro.precision): auto = bf16 autocast on a CUDA device with bf16, else fp32
PRECISIONS = ("auto", "bf16", "tf32", "fp32")
DEVICE_FORMS = "cpu, mps, cuda, cuda:N, xpu, xpu:N, npu[:N], hpu[:N], mtia[:N], xla[:N]"
DEVICE = re.compile(r"auto|cpu|mps|(?:cuda|xpu|npu|hpu|mtia|xla)(?::\d+)?")


def check_optimizer_hparams(
    lr: float,
    decay_rate: float,
    clip_threshold: float,
    eps: float,
    weight_decay: float,
    initial_step: int,
    prefix: str = "",
) -> None:
    """Raise ValueError naming the first Adafactor hyper-parameter outside its allowed range.

    The one copy of these rules: ``OptimizerConfig`` runs it (``prefix="trainer.optimizer."``)
    so a bad override fails before anything loads, and ``repro.optim.Adafactor`` runs it too.
    """
    step_ok = isinstance(initial_step, int) and not isinstance(initial_step, bool)
    rules = (
        ("lr", lr, "a finite number > 0", lr > 0 and math.isfinite(lr)),
        ("decay_rate", decay_rate, "in (0, 1] (β_i = 1 − (i+1)^−c)", 0 < decay_rate <= 1),
        ("clip_threshold", clip_threshold, "> 0 (inf disables clipping)", clip_threshold > 0),
        ("eps", eps, ">= 0", eps >= 0),
        ("weight_decay", weight_decay, "in [0, 1)", 0 <= weight_decay < 1),
        ("initial_step", initial_step, "an integer >= 0", step_ok and initial_step >= 0),
    )
    for key, value, allowed, ok in rules:
        if not ok:
            raise ValueError(f"{prefix}{key} must be {allowed}; got {value!r}")


@dataclass
class OptimizerConfig:
    """Adafactor as the paper trains prompts (t5x rule, see repro/optim.py)."""

    lr: float = 0.3  # constant
    decay_rate: float = 0.8  # β2_t = 1 − t^−0.8
    clip_threshold: float = 1.0  # update clipping
    eps: float = 1e-30
    weight_decay: float = 1e-5
    # Official: p ← (1 − wd)·p, not scaled by lr. torch/HF Adafactor scale it by lr: set true.
    weight_decay_lr_scaled: bool = False
    # Step counter i at the prompt's first update: 0 = the paper's β2_t = 1 − t^−0.8 over the
    # prompt's own steps. The official runs continue the restored checkpoint's global step
    # (T5.1.1's 1M + LM adaptation's 100K), so β2 starts near 1: trainer=official sets 1100000.
    initial_step: int = 0
    # Second moment of the [p, d] prompt. auto = t5x's size rule, which the official runs hit
    # (t5x ignores the "do not factor" rule of the prompt-tuning gin for rank <= 2 parameters):
    # factored iff p >= min_dim_size_to_factor and d >= it, so p = 150 is factored, p <= 127 not.
    # true = factor every rank >= 2 tensor (transformers' Adafactor); false = never (the gin's
    # intent). Case-insensitive (Hydra hands "True" for factored=true).
    factored: str = "auto"
    min_dim_size_to_factor: int = 128
    # t5x's multiply_by_parameter_scale: lr × max(eps2, RMS(θ)) per tensor. Off for the prompt
    # (the paper); on for model tuning (t5x's default, conf/method/model.yaml).
    parameter_scale: bool = False
    eps2: float = 1e-3  # t5x's epsilon2: the least parameter scale

    def __post_init__(self) -> None:
        self.factored = parse_factored(self.factored, "trainer.optimizer.factored")
        if not (self.eps2 > 0 and math.isfinite(self.eps2)):
            raise ValueError(
                f"trainer.optimizer.eps2 must be a finite number > 0; got {self.eps2!r}"
            )
        check_optimizer_hparams(
            self.lr,
            self.decay_rate,
            self.clip_threshold,
            self.eps,
            self.weight_decay,
            self.initial_step,
            prefix="trainer.optimizer.",
        )
        check_positive_int("trainer.optimizer.min_dim_size_to_factor", self.min_dim_size_to_factor)


def with_precision(keys: dict) -> dict:
    """Config keys saved before ``precision`` existed (a run's fingerprint, an LM adaptation's
    resume state) in today's words: ``bf16_autocast`` false was fp32 (nothing else ran without
    autocast), true bf16. Anything else is returned as it is."""
    if isinstance(keys, dict) and "bf16_autocast" in keys and "precision" not in keys:
        keys = dict(keys)
        keys["precision"] = "bf16" if keys.pop("bf16_autocast") else "fp32"
    return keys


def divisors(n: int) -> list[int]:
    """The micro-batch counts a batch of ``n`` examples splits into evenly, fewest first."""
    return [k for k in range(1, n + 1) if n % k == 0]


@dataclass
class TrainerConfig:
    # 0: no training; the initial prompt (init=from_file: a given one) is scored on the eval
    # split and kept as best/ (no training data are read)
    steps: int = 30_000
    batch_size: int = 32  # paper; T5X's default is 128
    # Micro-batches per step (a divisor of batch_size), or auto (conf/trainer/paper.yaml): the
    # fewest with which the job's memory estimate fits cost.gpu_memory_gb, resolved to an int
    # when the config is loaded (repro.resolve.load_config); an out-of-memory step then retries
    # with the next count. Same FLOPs; the same gradient at dropout 0 (token-weighted
    # accumulation), the same in distribution with dropout (the masks follow the micro-batches).
    grad_accum: Union[int, str] = 1  # noqa: UP007  (OmegaConf reads typing.Union, not X | Y)
    # random: i.i.d. batches (T5X; the paper's runs). bucketed: batches of similar length from
    # pools of 16 batches, less padding and faster, but not random (docs/batching.md).
    batching: str = "random"
    # null: a step is batch_size examples. N: a step is the examples that batch_size packed
    # rows of N / batch_size input tokens hold, packed as T5X packs them (repro.data.
    # token_batches): model tuning's 2^16 = 128 × 512 tokens (conf/method/model.yaml; 2^20 for
    # model_multitask), so grad_accum still divides batch_size (rows). docs/model_tuning.md
    batch_tokens: int | None = None
    eval_every: int = 1_000  # also how often last/ is checkpointed
    log_every: int = 100
    eval_batch_size: int = 64
    z_loss: float = 0.0  # paper silent; official T5X adds 1e-4
    device: str = "auto"  # auto = cuda if available, else cpu
    # auto | bf16 | tf32 | fp32: how activations and matmuls are computed (repro.precision); auto
    # = bf16 autocast on a CUDA device that has it (the official code's activation_dtype), else
    # fp32. The frozen weights' storage is model.dtype.
    precision: str = "auto"
    progress: bool = True
    # Stop (checkpoint, exit, resume on the next launch) after this many steps in one session:
    # for time-limited cluster jobs. Does not change results.
    stop_after_steps: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # True on a config whose grad_accum was auto (set as Config resolves it; not a config key)
    grad_accum_auto: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_positive_int("trainer.steps", self.steps, minimum=0)  # 0: score the initial prompt
        for key in ("batch_size", "eval_every", "log_every"):
            check_positive_int(f"trainer.{key}", getattr(self, key))
        if self.grad_accum != GRAD_ACCUM_AUTO:
            accum = self.grad_accum
            if isinstance(accum, bool) or not isinstance(accum, int) or accum < 1:
                raise ValueError(
                    f"trainer.grad_accum must be an integer >= 1 dividing trainer.batch_size, or "
                    f"{GRAD_ACCUM_AUTO}; got {accum!r}"
                )
        check_positive_int("trainer.eval_batch_size", self.eval_batch_size)
        check_choice("trainer.batching", self.batching, BATCHINGS)
        if self.batch_tokens is not None:
            self.check_batch_tokens()
        check_choice("trainer.precision", self.precision, PRECISIONS)
        if not DEVICE.fullmatch(self.device):
            raise ValueError(
                f"trainer.device={self.device!r} is not allowed; choose one of: auto, {DEVICE_FORMS}"
            )
        if not (self.z_loss >= 0 and math.isfinite(self.z_loss)):
            raise ValueError(f"trainer.z_loss must be a finite number >= 0; got {self.z_loss!r}")
        if self.stop_after_steps is not None:
            check_positive_int("trainer.stop_after_steps", self.stop_after_steps)
        if self.grad_accum != GRAD_ACCUM_AUTO and self.batch_size % self.grad_accum:
            raise ValueError(
                f"trainer.batch_size={self.batch_size} is not a multiple of "
                f"trainer.grad_accum={self.grad_accum}"
            )

    def check_batch_tokens(self) -> None:
        """``trainer.batch_tokens``: whole rows of at least 2 tokens, in random order."""
        tokens, rows = self.batch_tokens, self.batch_size
        check_positive_int("trainer.batch_tokens", tokens)
        if tokens % rows or tokens // rows < 2:
            raise ValueError(
                f"trainer.batch_tokens={tokens} must be a multiple of trainer.batch_size={rows} "
                "(the packed rows of a step) with rows of >= 2 tokens; or null for a batch of "
                "batch_size examples"
            )
        if self.batching != "random":
            raise ValueError(
                f"trainer.batching={self.batching} sorts fixed-size batches by length; "
                "trainer.batch_tokens packs the epoch's random order: set "
                "trainer.batching=random or trainer.batch_tokens=null"
            )

    def step_examples(self, input_tokens: int) -> int:
        """Examples a step holds when each has ``input_tokens`` input tokens: ``batch_size``, or
        with ``batch_tokens`` as many as fill its rows (at least one per row)."""
        if self.batch_tokens is None:
            return self.batch_size
        return max(self.batch_size, self.batch_tokens // max(1, input_tokens))
