"""Typed configuration: one dataclass per Hydra config group, registered in the ConfigStore.

``conf/*.yaml`` fills these schemas; a typo'd key or a wrongly typed value fails when Hydra
composes, and ``to_config`` turns the composed ``DictConfig`` into these objects, running each
``__post_init__`` check, so a bad value fails before anything is loaded. Code below ``run.py``
only ever sees these objects. Here: :class:`Config` and the groups of the paper's axes (model,
objective, init, task, method), of where a run logs and writes (logger, paths) and of what a dry
run assumes (cost); the trainer's group is ``repro.trainer_config``. This module holds data and
its validation only: what a config resolves against the world (``trainer.grad_accum=auto`` from
the memory estimate, the prompt file of ``init=from_file``) is done by
``repro.resolve.load_config`` on the runs floor, and which checkpoint a run loads by
``repro.checkpoints``.

Defaults are the paper's; where the official code (google-research/prompt-tuning gin files)
differs, the comment says so and the official value is one override away.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from repro.cli import check_choice, check_positive_int
from repro.cost_config import CostConfig
from repro.methods import DEFAULT_METHOD, LORA_KEYS, get_method
from repro.trainer_config import DEVICE, DEVICE_FORMS, TrainerConfig

# `${repro_dir:}` in conf/ = this package's directory, so configs name the shipped toy
# checkpoints (repro/toy_models/) wherever the command runs from.
OmegaConf.register_new_resolver(
    "repro_dir", lambda: str(Path(__file__).resolve().parent), replace=True
)

SIZES = ("small", "base", "large", "xl", "xxl")
OBJECTIVES = ("span_corruption", "span_corruption_sentinel", "lm_adapt", "next_token", "instruct")
# a causal LM's objectives: pre-trained on next tokens (Pythia, Qwen2.5 base), then
# instruction-tuned (Qwen2.5-Instruct); the T5 ones name T5 checkpoints only
CAUSAL_OBJECTIVES = ("next_token", "instruct")
INITS = ("random_uniform", "sampled_vocab", "class_label", "from_file", "text")
UNIFORM_SCALES = ("fixed", "embedding")  # init.scale (repro.prompts.UNIFORM_SCALES)
TEXT_RULES = ("peft", "official")  # init=text: PEFT's TEXT init (default) | from_embedded_string
SENTINEL_PLACEMENTS = ("targets", "inputs_and_targets")
EVAL_MODES = ("generate", "rank")
DTYPES = ("float32", "bfloat16", "float16")
FAMILIES = ("t5", "causal")  # encoder-decoder (repro.model) | decoder-only (repro.causal)
POSITIONS = ("peft", "unpadded")  # a causal LM's position ids (repro.causal)
SEPARATOR = "\n"  # between a causal LM's input and target, by default (repro.causal)
LOGGERS = ("none", "wandb")
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
    # Decoder-only backbones (docs/causal.md). The family is the checkpoint's own
    # (is_encoder_decoder in its config.json): None takes it; "t5" | "causal" must match it, and
    # says which shapes a dry run prices. Causal shapes: num_layers decoder layers, d_kv the
    # head size, num_kv_heads (grouped-query attention; None = num_heads), gated_mlp (Llama and
    # Qwen2's SwiGLU, T5.1.1's gated GELU: true; GPT-2 and Pythia's plain MLP: false).
    family: str | None = None
    num_kv_heads: int | None = None
    gated_mlp: bool = True
    # The checkpoint after N pre-training steps, "{steps}" replaced by lm_adapt_steps (Figure
    # 3(d) on a causal LM: EleutherAI/pythia-160m@step{steps}, a hub revision after "@").
    steps_checkpoint: str | None = None
    # How a causal LM numbers [prompt; input; target]: peft (PEFT's, none passed) | unpadded
    positions: str = "peft"
    # The text between a task's input and its target in a causal LM's sequence
    # (repro.causal.encode_causal; docs/causal.md). A tokenizer with no token for it encodes
    # nothing there (the toy causal ladder's SentencePiece drops the newline; the log says so)
    separator: str = SEPARATOR

    def __post_init__(self) -> None:
        check_choice("model.dtype", self.dtype, DTYPES)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1); got {self.dropout}")
        if self.attn_implementation is not None:
            check_choice("model.attn_implementation", self.attn_implementation, ATTENTIONS)
        if self.device_map is not None and not (
            self.device_map in DEVICE_MAP_STRATEGIES or DEVICE.fullmatch(self.device_map)
        ):
            raise ValueError(
                f"model.device_map={self.device_map!r} is not allowed; choose one of: "
                f"{', '.join(DEVICE_MAP_STRATEGIES)}, or one device: {DEVICE_FORMS}"
            )
        if self.family is not None:
            check_choice("model.family", self.family, FAMILIES)
        check_choice("model.positions", self.positions, POSITIONS)
        if self.steps_checkpoint is not None and "{steps}" not in self.steps_checkpoint:
            raise ValueError(
                f"model.steps_checkpoint={self.steps_checkpoint!r} must contain {{steps}}"
            )
        shape = ("params", "d_model", "num_layers", "num_heads", "num_kv_heads", "d_kv", "d_ff")
        for key in (*shape, "vocab_size"):
            if getattr(self, key) is not None:
                check_positive_int(f"model.{key}", getattr(self, key))


@dataclass
class ObjectiveConfig:
    """Pre-training objective of the frozen checkpoint (Figure 3c)."""

    name: str = "lm_adapt"
    # Span Corruption + Sentinel: the official repo prefixes only the targets with <extra_id_0>;
    # seqio's variant also appends it to the inputs ("inputs_and_targets").
    sentinel_placement: str = "targets"

    def __post_init__(self) -> None:
        check_choice("objective", self.name, OBJECTIVES)
        check_choice("objective.sentinel_placement", self.sentinel_placement, SENTINEL_PLACEMENTS)

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
    # random_uniform: fixed = [low, high] (the paper's); embedding = ±√3·σ of the backbone's
    # embedding table, the same spread as its tokens (for causal LMs, docs/causal.md)
    scale: str = "fixed"
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
        check_choice("init", self.name, INITS)
        if not self.low < self.high:
            raise ValueError(f"init.low must be < init.high; got {self.low} and {self.high}")
        check_positive_int("init.population", self.population)
        check_choice("init.text_rule", self.text_rule, TEXT_RULES)
        check_choice("init.scale", self.scale, UNIFORM_SCALES)
        if self.scale != "fixed" and self.name != "random_uniform":
            raise ValueError(f"init.scale only applies with init=random_uniform (got {self.name})")
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
        check_choice("task.eval_mode", self.eval_mode, EVAL_MODES)
        # A length limit counts eos: 2 is the least that holds one token.
        for key, least in (("max_input_length", 2), ("max_target_length", 2)):
            if getattr(self, key) is not None:
                check_positive_int(f"task.{key}", getattr(self, key), minimum=least)
        if self.max_eval_examples is not None:
            check_positive_int("task.max_eval_examples", self.max_eval_examples)


@dataclass
class MethodConfig:
    """What is trained (conf/method/; repro.methods.METHODS says what each name does). A method
    with keys of its own has its own schema (:data:`METHOD_SCHEMAS`: LoRA's), which its recipe
    brings, so that no other method's config carries them (``--cfg job``)."""

    name: str = DEFAULT_METHOD

    def __post_init__(self) -> None:
        get_method(self.name)


@dataclass
class LoraMethodConfig(MethodConfig):
    """``method=lora`` (docs/lora.md; conf/method/lora.yaml brings this schema): rank, scaling
    alpha (update × alpha / r), dropout on the LoRA input, and which T5 linear layers get an
    adapter (peft's T5 default: q, v)."""

    name: str = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("method.r", self.r)
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


# The schema of a method with keys of its own, by its name; any other method: MethodConfig.
METHOD_SCHEMAS: dict[str, type[MethodConfig]] = {"lora": LoraMethodConfig}


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
        check_choice("logger", self.name, LOGGERS)
        if self.mode is not None:
            check_choice("logger.mode", self.mode, ("online", "offline", "disabled"))
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
        check_positive_int("prompt_len", self.prompt_len)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        check_positive_int("lm_adapt_steps", self.lm_adapt_steps, minimum=0)
        default_steps = self.model.lm_adapt_checkpoint_steps
        steps_axis = self.objective.name == "lm_adapt" or (
            self.objective.name == "next_token" and self.model.steps_checkpoint
        )
        if self.lm_adapt_steps != default_steps and not steps_axis:
            raise ValueError(
                f"lm_adapt_steps={self.lm_adapt_steps} only applies with objective=lm_adapt, or "
                "objective=next_token on a model with pre-training checkpoints "
                f"(model.steps_checkpoint); got objective={self.objective.name} on "
                f"model={self.model.size}: leave it at {default_steps}"
            )
        check_choice("lm_adapt_source", self.lm_adapt_source, LM_ADAPT_SOURCES)
        if self.lm_adapt_source != "auto" and self.objective.name != "lm_adapt":
            raise ValueError(
                f"lm_adapt_source={self.lm_adapt_source} only applies with objective=lm_adapt "
                f"(got objective={self.objective.name})"
            )

    @property
    def _no_step_axis(self) -> bool:
        """A causal objective on a model without pre-training checkpoints (steps_checkpoint)."""
        return self.objective.name in CAUSAL_OBJECTIVES and not self.model.steps_checkpoint

    @property
    def axes(self) -> dict[str, Any]:
        """The ablation axes of this run, as result.json and the results frame name them."""
        prompt = get_method(self.method.name).prompt_axes
        return {
            "size": self.model.size,
            "params": self.model.params,
            "method": self.method.name,
            "objective": self.objective.name,
            # what the run's name says (`-lm500-`, `-lm_adapt100k-`) and what the results frame
            # reads from config.yaml; `lm_adapt_source: none` says when no LM adaptation applies
            # (on a causal LM: its pre-training steps where it has checkpoints of them; None
            # where it has none, as Qwen2.5's releases: its count is not known)
            "lm_adapt_steps": None if self._no_step_axis else self.lm_adapt_steps,
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


def register_configs() -> None:
    """Register the schema so conf/*.yaml are validated against it.

    One schema, the whole ``Config``, first in conf/config.yaml's defaults: every group's file
    merges into its typed field, so a typo'd key or a wrongly typed value fails there. (No
    per-group ``schema`` option: ``--help`` would list it beside the real options.)
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    # conf/method/lora.yaml: `/lora_schema@method` types its `method` node (outside any group,
    # so --help lists no such option)
    store.store(name="lora_schema", node=LoraMethodConfig)


def to_config(cfg: DictConfig) -> Config:
    """Composed DictConfig → validated ``Config`` (raises ValueError naming the bad value)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    schema = OmegaConf.structured(Config)
    method = plain.get("method")
    if isinstance(method, dict):
        kind = METHOD_SCHEMAS.get(method.get("name"), MethodConfig)
        schema.method = OmegaConf.structured(kind)
        # a run's config.yaml written before LoRA's keys had a schema of their own held them
        # for every method: read it as it was meant
        own = {f.name for f in dataclasses.fields(kind)}
        plain["method"] = {k: v for k, v in method.items() if k in own or k not in LORA_KEYS}
    return OmegaConf.to_object(OmegaConf.merge(schema, plain))
