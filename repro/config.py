"""Typed configuration: one dataclass per Hydra config group, registered in the ConfigStore.

``conf/*.yaml`` fills these schemas; a typo'd key or a wrongly typed value fails when Hydra
composes, and ``to_config`` turns the composed ``DictConfig`` into these objects, running each
``__post_init__`` check, so a bad value fails before anything is loaded. Code below ``run.py``
only ever sees these objects. This module holds data and its validation only: what a config
resolves against the world (``trainer.grad_accum=auto`` from the memory estimate, the prompt
file of ``init=from_file``) is done by ``repro.resolve.load_config`` on the runs floor.

Defaults are the paper's; where the official code (google-research/prompt-tuning gin files)
differs, the comment says so and the official value is one override away.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from omegaconf import MISSING, DictConfig, OmegaConf

from repro.factoring import parse_factored
from repro.methods import DEFAULT_METHOD, LORA_KEYS, get_method

# `${repro_dir:}` in conf/ = this package's directory, so configs name the shipped toy
# checkpoints (repro/toy_models/) wherever the command runs from.
OmegaConf.register_new_resolver(
    "repro_dir", lambda: str(Path(__file__).resolve().parent), replace=True
)

SIZES = ("small", "base", "large", "xl", "xxl")
OBJECTIVES = ("span_corruption", "span_corruption_sentinel", "lm_adapt")
INITS = ("random_uniform", "sampled_vocab", "class_label", "from_file", "text")
TEXT_RULES = ("peft", "official")  # init=text: PEFT's TEXT init (default) | from_embedded_string
SENTINEL_PLACEMENTS = ("targets", "inputs_and_targets")
EVAL_MODES = ("generate", "rank")
DTYPES = ("float32", "bfloat16", "float16")
LOGGERS = ("none", "wandb")
BATCHINGS = ("random", "bucketed")
GRAD_ACCUM_AUTO = "auto"  # trainer.grad_accum: the fewest micro-batches that fit the GPU
ATTENTIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
# Where LM-adapted backbones come from (Figure 3d): what a user sets, and what a run records.
LM_ADAPT_SOURCES = ("auto", "own")
RESOLVED_LM_ADAPT_SOURCES = ("released", "own", "none")
RELEASED_LM_ADAPT_STEPS = 100_000  # Google released LM-adapted T5.1.1s at this step count only
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra configs (conf/*.yaml)
# google/t5-<size>-lm-adapt: a hub id, a mirror directory named like it, or a hub-cache snapshot
# (models--google--t5-<size>-lm-adapt/snapshots/...).
_RELEASED_LM_ADAPT = re.compile(
    r"(?:^|/)(?:google/|models--google--)t5-(?:small|base|large|xl|xxl)-lm-adapt(?:/|$)"
)


def _check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _check_positive_int(what: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")


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


# What `trainer.device` may name: auto, or a torch device type with an optional index.
DEVICE_FORMS = "cpu, mps, cuda, cuda:N, xpu, xpu:N, npu[:N], hpu[:N], mtia[:N], xla[:N]"
_DEVICE = re.compile(r"auto|cpu|mps|(?:cuda|xpu|npu|hpu|mtia|xla)(?::\d+)?")
# from_pretrained's device_map strategies (accelerate); a device string places the whole model.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# The modes wandb.init accepts (wandb.sdk.wandb_settings.Settings.mode).
WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")


def check_wandb_mode_env() -> None:
    """Refuse a ``WANDB_MODE`` environment variable wandb.init would reject: wandb reads it even
    when ``logger.mode`` is set, and fails with a pydantic traceback."""
    mode = os.environ.get("WANDB_MODE")
    if mode and mode not in WANDB_MODES:
        raise ValueError(
            f"environment variable WANDB_MODE={mode!r} is not a W&B mode; allowed: "
            f"{', '.join(WANDB_MODES)} — unset or fix it, or use logger=none"
        )


def is_released_lm_adapt(checkpoint: str | None) -> bool:
    """True if ``checkpoint`` names one of Google's released LM-adapted T5.1.1s (100K steps)."""
    return bool(checkpoint) and _RELEASED_LM_ADAPT.search(str(checkpoint)) is not None


def resolve_lm_adapt_source(
    objective: str | None,
    lm_adapt_steps: int | None,
    choice: str = "auto",
    model_path: str | None = None,
    lm_adapt_checkpoint: str | None = None,
    checkpoint_steps: int = RELEASED_LM_ADAPT_STEPS,
) -> str:
    """Which LM-adaptation recipe made the backbone a run loads: ``released``, ``own``, ``none``.

    - ``none``: no LM adaptation: a span-corruption objective, or 0 steps (T5.1.1 itself).
    - ``released``: Google's recipe, i.e. the backbone is one of its releases
      (``google/t5-<size>-lm-adapt``, :func:`is_released_lm_adapt`): ``choice="auto"`` at 100K
      steps on a model whose ``checkpoints.lm_adapt`` is one.
    - ``own``: the suite's ``repro.lm_adapt`` (batch 128, no packing, a fresh Adafactor state):
      every step count with ``choice="own"``, and the counts Google never released with
      ``auto``. A model whose ``checkpoints.lm_adapt`` is *not* a Google release (the tiny and
      toy models, LM-adapted by the suite itself) is ``own`` at 100K too: Google released no
      other LM-adapted T5, so any other checkpoint was made by this suite (or its user).

    A local ``model_path`` is what the run loads whatever else is set: ``released`` if it names
    a Google release, else ``own``.

    Args:
        choice: the config's ``lm_adapt_source`` (auto | own).
        lm_adapt_checkpoint: the model's ``checkpoints.lm_adapt`` (what ``auto`` loads at
            ``checkpoint_steps``, the model's ``lm_adapt_checkpoint_steps``: 100K).
    """
    if objective != "lm_adapt" or not lm_adapt_steps:
        return "none"
    if model_path:
        return "released" if is_released_lm_adapt(model_path) else "own"
    if choice == "own" or lm_adapt_steps != checkpoint_steps:
        return "own"
    return "released" if is_released_lm_adapt(lm_adapt_checkpoint) else "own"


@dataclass
class ModelConfig:
    """A backbone size; ``checkpoints`` maps objective → hub id; ``path`` (a local dir) overrides."""

    size: str = MISSING
    params: int | None = None  # frozen parameter count (x axis of the figures)
    d_model: int | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)
    # The LM-adaptation steps of `checkpoints.lm_adapt`, and so the default `lm_adapt_steps`:
    # Google's releases are 100K; the toy world ships its own 500-step ones.
    lm_adapt_checkpoint_steps: int = RELEASED_LM_ADAPT_STEPS
    path: str | None = None
    build_tiny: bool = False  # build the suite's tiny random T5 at `path` if it is missing
    dtype: str = "float32"  # "bfloat16" on GPUs: the official code keeps activations in bf16
    attn_implementation: str | None = None  # e.g. "sdpa" or "eager"; None = transformers' choice
    # The paper is silent on dropout; the official prompt-tuning gin configs keep T5's 0.1.
    dropout: float = 0.1
    # Scale switches (docs/cluster.md); none changes what a run computes.
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    # gelu_new (T5.1.1) as torch's one-kernel tanh GELU: the same function, less memory and time
    fused_gelu: bool = True
    device_map: str | None = None  # from_pretrained's device_map ("auto": spread over GPUs)
    trust_remote_code: bool = False  # never run a checkpoint's own code unless asked
    # T5.1.1 shapes, for the cost estimate of a dry run (no weights are read for it).
    num_layers: int | None = None  # encoder layers = decoder layers
    num_heads: int | None = None
    d_kv: int | None = None
    d_ff: int | None = None
    vocab_size: int | None = None
    tie_word_embeddings: bool = False  # T5.1.1 has a separate LM head

    def __post_init__(self) -> None:
        _check_choice("model.dtype", self.dtype, DTYPES)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1); got {self.dropout}")
        if self.attn_implementation is not None:
            _check_choice("model.attn_implementation", self.attn_implementation, ATTENTIONS)
        if self.device_map is not None and not (
            self.device_map in DEVICE_MAP_STRATEGIES or _DEVICE.fullmatch(self.device_map)
        ):
            raise ValueError(
                f"model.device_map={self.device_map!r} is not allowed; choose one of: "
                f"{', '.join(DEVICE_MAP_STRATEGIES)}, or one device: {DEVICE_FORMS}"
            )
        for key in ("params", "d_model", "num_layers", "num_heads", "d_kv", "d_ff", "vocab_size"):
            if getattr(self, key) is not None:
                _check_positive_int(f"model.{key}", getattr(self, key))


@dataclass
class ObjectiveConfig:
    """Pre-training objective of the frozen checkpoint (Figure 3c)."""

    name: str = "lm_adapt"
    # Span Corruption + Sentinel: the official repo prefixes only the targets with <extra_id_0>;
    # seqio's variant also appends it to the inputs ("inputs_and_targets").
    sentinel_placement: str = "targets"

    def __post_init__(self) -> None:
        _check_choice("objective", self.name, OBJECTIVES)
        _check_choice("objective.sentinel_placement", self.sentinel_placement, SENTINEL_PLACEMENTS)

    @property
    def uses_sentinel(self) -> bool:
        return self.name == "span_corruption_sentinel"


@dataclass
class InitConfig:
    """Prompt initialisation (Figure 3b)."""

    name: str = "class_label"
    # random_uniform: paper U[-0.5, 0.5]; official flax uniform(0.5) = U[0, 0.5) → init.low=0.0
    low: float = -0.5
    high: float = 0.5
    # sampled_vocab / class_label filler: the 5,000 most frequent SentencePiece ids
    population: int = 5000
    # from_file: a prompt to start from (or, with trainer.steps=0, to score): a .npy [P, H]
    # (the official code's), our prompt dir / .safetensors, a run dir (its best/), or a PEFT
    # prompt-tuning adapter dir (docs/interop.md)
    path: str | None = None
    # text: the text's token embeddings, cut or repeated to prompt_len (PEFT's TEXT init);
    # text_rule=official: no eos, cut, the rest random_uniform (from_embedded_string)
    text: str | None = None
    text_rule: str = "peft"

    def __post_init__(self) -> None:
        _check_choice("init", self.name, INITS)
        if not self.low < self.high:
            raise ValueError(f"init.low must be < init.high; got {self.low} and {self.high}")
        _check_positive_int("init.population", self.population)
        _check_choice("init.text_rule", self.text_rule, TEXT_RULES)
        for key, owner in (("path", "from_file"), ("text", "text")):
            value = getattr(self, key)
            if self.name == owner and (value is None or not str(value).strip()):
                raise ValueError(f"init={owner} needs init.{key}=...")
            if self.name != owner and value is not None:
                raise ValueError(
                    f"init.{key} only applies with init={owner} (got init={self.name})"
                )


@dataclass
class TaskConfig:
    """Which task (or ``superglue`` = the 8 tasks, one prompt each) and where its data live."""

    name: str = "superglue"
    data_dir: str | None = None  # local files instead of the hub (hub or official schema)
    max_input_length: int | None = None  # None: the task's default (512, official demos)
    # None: the task's own limit, else sized from its data (longest train/eval target + eos).
    # The official demos use 8; a shorter limit than the data's is warned about and counted.
    max_target_length: int | None = None
    eval_mode: str = "generate"  # the paper decodes greedily; "rank" scores each label string
    max_eval_examples: int | None = None  # cap dev examples (smoke runs); None = all

    def __post_init__(self) -> None:
        _check_choice("task.eval_mode", self.eval_mode, EVAL_MODES)
        # A length limit counts eos: 2 is the least that holds one token.
        for key, least in (("max_input_length", 2), ("max_target_length", 2)):
            if getattr(self, key) is not None:
                _check_positive_int(f"task.{key}", getattr(self, key), minimum=least)
        if self.max_eval_examples is not None:
            _check_positive_int("task.max_eval_examples", self.max_eval_examples)


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
        _check_positive_int("trainer.optimizer.min_dim_size_to_factor", self.min_dim_size_to_factor)


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
    # with the next count. Same FLOPs, same gradient (token-weighted accumulation).
    grad_accum: Union[int, str] = 1  # noqa: UP007  (OmegaConf reads typing.Union, not X | Y)
    # random: i.i.d. batches (T5X; the paper's runs). bucketed: batches of similar length from
    # pools of 16 batches, less padding and faster, but not random (docs/batching.md).
    batching: str = "random"
    eval_every: int = 1_000  # also how often last/ is checkpointed
    log_every: int = 100
    eval_batch_size: int = 64
    z_loss: float = 0.0  # paper silent; official T5X adds 1e-4
    device: str = "auto"  # auto = cuda if available, else cpu
    bf16_autocast: bool = False  # activations in bf16 where the device supports it (official)
    progress: bool = True
    # Stop (checkpoint, exit, resume on the next launch) after this many steps in one session:
    # for time-limited cluster jobs. Does not change results.
    stop_after_steps: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # True on a config whose grad_accum was auto (set as Config resolves it; not a config key)
    grad_accum_auto: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_positive_int("trainer.steps", self.steps, minimum=0)  # 0: score the initial prompt
        for key in ("batch_size", "eval_every", "log_every"):
            _check_positive_int(f"trainer.{key}", getattr(self, key))
        if self.grad_accum != GRAD_ACCUM_AUTO:
            accum = self.grad_accum
            if isinstance(accum, bool) or not isinstance(accum, int) or accum < 1:
                raise ValueError(
                    f"trainer.grad_accum must be an integer >= 1 dividing trainer.batch_size, or "
                    f"{GRAD_ACCUM_AUTO}; got {accum!r}"
                )
        _check_positive_int("trainer.eval_batch_size", self.eval_batch_size)
        _check_choice("trainer.batching", self.batching, BATCHINGS)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"trainer.device={self.device!r} is not allowed; choose one of: auto, {DEVICE_FORMS}"
            )
        if not (self.z_loss >= 0 and math.isfinite(self.z_loss)):
            raise ValueError(f"trainer.z_loss must be a finite number >= 0; got {self.z_loss!r}")
        if self.stop_after_steps is not None:
            _check_positive_int("trainer.stop_after_steps", self.stop_after_steps)
        if self.grad_accum != GRAD_ACCUM_AUTO and self.batch_size % self.grad_accum:
            raise ValueError(
                f"trainer.batch_size={self.batch_size} is not a multiple of "
                f"trainer.grad_accum={self.grad_accum}"
            )


@dataclass
class MethodConfig:
    """What is trained (conf/method/; repro.methods.METHODS says what each name does)."""

    name: str = DEFAULT_METHOD
    # LoRA only (method=lora; docs/lora.md): rank, scaling alpha (update × alpha / r), dropout
    # on the LoRA input, and which T5 linear layers get an adapter (peft's T5 default: q, v).
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self) -> None:
        get_method(self.name)
        _check_positive_int("method.r", self.r)
        if self.alpha <= 0:
            raise ValueError(f"method.alpha must be > 0; got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"method.dropout must be in [0, 1); got {self.dropout}")
        bad = [m for m in self.target_modules if m not in LORA_TARGETS]
        if bad or not self.target_modules:
            raise ValueError(
                f"method.target_modules={list(self.target_modules)} is not allowed; choose "
                f"among T5's linear layers: {', '.join(LORA_TARGETS)}"
            )


# T5's linear layers by their module name: attention projections, then the (gated) feed-forward.
LORA_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "repro"
    entity: str | None = None
    group: str | None = None  # default: the sweep name
    mode: str | None = None  # online | offline | disabled; None = offline without an API key
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("logger", self.name, LOGGERS)
        if self.mode is not None:
            _check_choice("logger.mode", self.mode, ("online", "offline", "disabled"))
        if self.name != "wandb":
            return
        # What wandb.init would refuse only after the model has loaded (wandb_settings.py).
        if not 0 < len(self.project) <= 128 or set(self.project) & set("/\\#?%:"):
            raise ValueError(
                f"logger.project={self.project!r} is not allowed: W&B wants 1-128 characters "
                f"and none of / \\ # ? % :"
            )
        for tag in self.tags:
            if not 0 < len(str(tag)) <= 64:
                raise ValueError(
                    f"logger.tags: {tag!r} is not allowed; W&B tags are 1-64 characters"
                )
        check_wandb_mode_env()


@dataclass
class PathsConfig:
    root: str = "."  # where runs/ and multirun/ go
    cache_dir: str = "${oc.env:REPRO_CACHE,${oc.env:HOME}/.cache/repro}"
    lm_adapt_dir: str = "${paths.cache_dir}/lm_adapt"  # the suite's own LM-adapted checkpoints


@dataclass
class CostConfig:
    """What a dry run (``dry_run=true``) assumes to turn FLOPs into GPU-hours (docs/cluster.md)."""

    gpu: str = "A100 bf16"  # only a label for the printout
    peak_tflops: float = 312.0  # dense bf16 peak of an A100
    # memory of one GPU in GB (10⁹ bytes, as printed): a job needing more is flagged with the
    # switches that make it fit. 80: the A100-80GB (80 GiB ≈ 85.9 GB; the rest covers the CUDA
    # context and the allocator's slack).
    gpu_memory_gb: float = 80.0
    utilisation: float = 0.4  # fraction of the peak a frozen-T5 step sustains (MFU)
    input_len: int | None = None  # encoder input tokens per example; None = the task's maximum
    target_len: int | None = None  # decoder tokens per example; None = the task's maximum

    def __post_init__(self) -> None:
        if not self.peak_tflops > 0:
            raise ValueError(f"cost.peak_tflops must be > 0; got {self.peak_tflops}")
        if not self.gpu_memory_gb > 0:
            raise ValueError(f"cost.gpu_memory_gb must be > 0; got {self.gpu_memory_gb}")
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"cost.utilisation must be in (0, 1]; got {self.utilisation}")
        for key in ("input_len", "target_len"):
            if getattr(self, key) is not None:
                _check_positive_int(f"cost.{key}", getattr(self, key))


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    init: InitConfig = field(default_factory=InitConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    prompt_len: int = 100
    seed: int = 0
    # conf/config.yaml: ${model.lm_adapt_checkpoint_steps}, the model's own LM-adapted checkpoint
    lm_adapt_steps: int = RELEASED_LM_ADAPT_STEPS
    # auto: Google's released checkpoint where there is one (100K), repro.lm_adapt's elsewhere
    # (10K, 50K); own: repro.lm_adapt's for every step count, 100K included (docs/lm_adapt.md).
    lm_adapt_source: str = "auto"
    sweep_name: str = "sweep"
    name: str = MISSING  # run name; default built from the axes in conf/config.yaml
    # Print parameters, memory, FLOPs and GPU-hours of the job(s) and exit; no weights loaded.
    dry_run: bool = False
    cost: CostConfig = field(default_factory=CostConfig)

    def __post_init__(self) -> None:
        _check_positive_int("prompt_len", self.prompt_len)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        _check_positive_int("lm_adapt_steps", self.lm_adapt_steps, minimum=0)
        default_steps = self.model.lm_adapt_checkpoint_steps
        if self.lm_adapt_steps != default_steps and self.objective.name != "lm_adapt":
            raise ValueError(
                f"lm_adapt_steps={self.lm_adapt_steps} only applies with objective=lm_adapt "
                f"(got objective={self.objective.name}; leave it at model={self.model.size}'s "
                f"{default_steps})"
            )
        _check_choice("lm_adapt_source", self.lm_adapt_source, LM_ADAPT_SOURCES)
        if self.lm_adapt_source != "auto" and self.objective.name != "lm_adapt":
            raise ValueError(
                f"lm_adapt_source={self.lm_adapt_source} only applies with objective=lm_adapt "
                f"(got objective={self.objective.name})"
            )

    @property
    def axes(self) -> dict[str, Any]:
        """The ablation axes of this run, as result.json and the results frame name them."""
        prompt = get_method(self.method.name).prompt_axes
        return {
            "size": self.model.size,
            "params": self.model.params,
            "method": self.method.name,
            "objective": self.objective.name,
            "lm_adapt_steps": self.lm_adapt_steps if self.objective.name == "lm_adapt" else None,
            # released | own | none: the recipe of the backbone (not the `auto`/`own` choice)
            "lm_adapt_source": resolve_lm_adapt_source(
                self.objective.name,
                self.lm_adapt_steps,
                self.lm_adapt_source,
                self.model.path,
                self.model.checkpoints.get("lm_adapt"),
                self.model.lm_adapt_checkpoint_steps,
            ),
            "prompt_len": self.prompt_len if prompt else None,
            "init": self.init.name if prompt else None,
            "task": self.task.name,
            "seed": self.seed,
        }


def check_method_overrides(method: str, overrides: Sequence[str]) -> None:
    """Refuse a command that sets what its method does not use (``method=model prompt_len=20``):
    the prompt's keys (``prompt_len``, ``init``, ``init.*``) mean nothing to a method that trains
    no prompt. Checked against the command's overrides, not the config's values, because an
    experiment file may set them for the prompt runs of a sweep that also holds other methods.

    Raises:
        ValueError: naming the override and the method.
    """
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if method != "lora" and key.startswith("method.") and key[len("method.") :] in LORA_KEYS:
            raise ValueError(
                f"{override} only applies to method=lora; method={method} trains no LoRA adapter"
            )
        if get_method(method).prompt_axes:
            continue
        if key in ("prompt_len", "init") or key.startswith("init."):
            raise ValueError(
                f"{override} only applies to method=prompt; method={method} trains no prompt "
                f"(allowed methods with a prompt: {', '.join(prompt_methods())})"
            )


def prompt_methods() -> list[str]:
    from repro.methods import METHODS

    return [m.name for m in METHODS.values() if m.prompt_axes]


# --- what a run loads ------------------------------------------------------------------------


class RunError(Exception):
    """A problem with the user's input, reported as one line (no traceback)."""


def model_lm_adapt_steps(size: Any) -> int:
    """The LM-adaptation steps of ``model=<size>``'s own ``checkpoints.lm_adapt``: the default
    ``lm_adapt_steps`` of its runs (``lm_adapt_checkpoint_steps`` in conf/model/<size>.yaml;
    100K, Google's release, for the T5 sizes and any size without a conf file)."""
    path = CONF_DIR / "model" / f"{size}.yaml"
    if isinstance(size, str) and path.is_file():
        steps = OmegaConf.load(path).get("lm_adapt_checkpoint_steps")
        if isinstance(steps, int):
            return steps
    return RELEASED_LM_ADAPT_STEPS


def own_replaces_release(objective, lm_adapt_steps, lm_adapt_source) -> bool:
    """True where ``lm_adapt_source=own`` loads another backbone than ``auto``: at 100K steps,
    where auto loads the model's ``checkpoints.lm_adapt`` (Google's release) and own loads
    ``repro.lm_adapt``'s ``step_100000/``. At 0 steps (T5.1.1) and at the counts Google never
    released (``step_<N>/`` either way) both choices load the same backbone: the same run."""
    return (
        objective == "lm_adapt"
        and str(lm_adapt_source) == "own"
        and int(lm_adapt_steps) == RELEASED_LM_ADAPT_STEPS
    )


def own_lm_adapt_steps(cfg: Config) -> int | None:
    """The step count of the ``repro.lm_adapt`` checkpoint this run loads
    (``<paths.lm_adapt_dir>/<size>/step_<N>/``), or None: a ``model.path``, no LM adaptation, or
    the model's own ``checkpoints.lm_adapt`` (``lm_adapt_source=auto`` at 100K)."""
    if cfg.model.path or cfg.objective.name != "lm_adapt" or cfg.lm_adapt_steps == 0:
        return None
    if cfg.lm_adapt_source == "own" or cfg.lm_adapt_steps != cfg.model.lm_adapt_checkpoint_steps:
        return cfg.lm_adapt_steps
    return None


def lm_adapt_command(size: str, steps: int) -> str:
    """The ``repro.lm_adapt`` command that makes ``step_<steps>/`` (the paper's counts at once:
    one run to 100K writes 10K and 50K on the way)."""
    paper = (10_000, 50_000, RELEASED_LM_ADAPT_STEPS)
    listed = ",".join(map(str, paper if steps in paper else (steps,)))
    return f"python -m repro.lm_adapt model={size} lm_adapt.steps=[{listed}]"


def checkpoint_for(cfg: Config) -> str:
    """The backbone to load: a local ``model.path`` wins; else size × objective × LM steps ×
    ``lm_adapt_source`` (own: ``repro.lm_adapt``'s ``step_<N>/``, 100K included)."""
    if cfg.model.path:
        return cfg.model.path
    steps = own_lm_adapt_steps(cfg)
    if steps is not None:
        own = Path(cfg.paths.lm_adapt_dir) / cfg.model.size / f"step_{steps}"
        if not (own / "config.json").exists():
            shipped = cfg.model.lm_adapt_checkpoint_steps
            if steps == shipped and cfg.lm_adapt_source == "own":
                why = (
                    "lm_adapt_source=own loads the suite's own LM adaptation, not Google's release"
                )
            elif is_released_lm_adapt(cfg.model.checkpoints.get("lm_adapt")):
                why = f"only {shipped} was released"
            else:
                why = f"model={cfg.model.size}'s checkpoints.lm_adapt is the {shipped}-step one"

            raise RunError(
                f"no LM-adapted checkpoint for model={cfg.model.size} lm_adapt_steps={steps} "
                f"at {own}; {why} — make it with `{lm_adapt_command(cfg.model.size, steps)}` "
                "or set model.path"
            )
        return str(own)
    objective = cfg.objective.name
    if objective == "lm_adapt" and cfg.lm_adapt_steps == 0:
        objective = "span_corruption"  # 0 LM-adaptation steps = T5.1.1 itself
    if objective not in cfg.model.checkpoints:
        raise RunError(
            f"model={cfg.model.size} names no checkpoint for objective={objective}; "
            f"known: {sorted(cfg.model.checkpoints)}; set model.path to a local checkpoint"
        )
    return cfg.model.checkpoints[objective]


def register_configs() -> None:
    """Register the schema so conf/*.yaml are validated against it.

    One schema, the whole ``Config``, first in conf/config.yaml's defaults: every group's file
    merges into its typed field, so a typo'd key or a wrongly typed value fails there. (No
    per-group ``schema`` option: ``--help`` would list it beside the real options.)
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """Composed DictConfig → validated ``Config`` (raises ValueError naming the bad value)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    schema = OmegaConf.merge(OmegaConf.structured(Config), plain)
    return OmegaConf.to_object(schema)
