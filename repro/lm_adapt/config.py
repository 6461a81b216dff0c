"""What one LM-adaptation run does: ``LMAdaptConfig`` (the ``lm_adapt:`` node of
conf/lm_adapt.yaml, checked on construction) inside ``LMAdaptRun`` (with the shared ``model``
and ``paths`` groups); where it starts (``source_checkpoint``) and writes (``output_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from repro.cli import check_choice
from repro.config import ModelConfig, PathsConfig
from repro.trainer_config import PRECISIONS

CORPUS_SUFFIXES = (".txt", ".jsonl")


@dataclass
class LMAdaptConfig:
    """What one LM-adaptation run does. Defaults follow T5's pre-training (see docs/lm_adapt.md)."""

    steps: list[int] = field(default_factory=lambda: [10_000, 50_000, 100_000])
    corpus: str | None = None  # local .txt (one document a line) or .jsonl ("text"); None = C4
    dataset: str = "allenai/c4"  # streamed with `datasets` when `corpus` is None
    dataset_config: str = "en"
    split: str = "train"
    # T5's prefix_lm cuts documents into segments of input_length - 1 tokens, so a target can be
    # up to input_length - 2 tokens: 512 keeps every token (114 would drop most continuations).
    input_length: int = 512
    target_length: int = 512
    batch_size: int = 128  # global (all ranks, all micro-batches); T5: 128 x 512 tokens
    grad_accum: int = 1  # micro-batches per step on each rank
    # Adafactor, T5 pre-training: lr = 1/sqrt(max(step + step_offset, warmup_steps)), parameter
    # scaling on, β2 = 1 - t^-0.8, update clipping 1.0, no momentum, no weight decay.
    warmup_steps: int = 10_000
    step_offset: int = 0  # e.g. 1000000: continue the schedule of T5.1.1's 1M pre-training steps
    dropout: float = 0.0  # T5.1.1 was pre-trained without dropout
    # auto | bf16 | tf32 | fp32 (repro.precision, as trainer.precision): auto = bf16 autocast on
    # a CUDA GPU with bf16 (T5's own pre-training computed in bf16), fp32 on a CPU; fp32 master
    # weights and optimizer state whatever it says
    precision: str = "auto"
    device: str = "auto"  # auto = cuda (this rank's GPU) if available, else cpu
    seed: int = 0
    save_every: int = 1_000  # how often last/ is written (besides every listed step)
    log_every: int = 100
    progress: bool = True

    def __post_init__(self) -> None:
        steps = list(self.steps)
        ints = all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        if not steps or not ints or steps[0] < 1 or any(b <= a for a, b in pairwise(steps)):
            raise ValueError(
                f"lm_adapt.steps={steps!r} must be a non-empty list of positive, strictly "
                "increasing integers, e.g. [10000,50000,100000]"
            )
        for key, minimum in (
            ("input_length", 2),
            ("target_length", 2),
            ("batch_size", 1),
            ("grad_accum", 1),
            ("warmup_steps", 1),
            ("save_every", 1),
            ("log_every", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"lm_adapt.{key} must be an integer >= {minimum}; got {value!r}")
        if self.step_offset < 0 or self.seed < 0:
            raise ValueError(
                f"lm_adapt.step_offset and lm_adapt.seed must be >= 0; "
                f"got {self.step_offset} and {self.seed}"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"lm_adapt.batch_size={self.batch_size} is not a multiple of "
                f"lm_adapt.grad_accum={self.grad_accum}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lm_adapt.dropout must be in [0, 1); got {self.dropout}")
        check_choice("lm_adapt.precision", self.precision, PRECISIONS)
        if self.corpus is not None:
            path = Path(self.corpus).expanduser()
            if path.suffix not in CORPUS_SUFFIXES:
                raise ValueError(
                    f"lm_adapt.corpus={self.corpus} must end in "
                    f"{' or '.join(CORPUS_SUFFIXES)} (one document a line / JSON with 'text')"
                )
            if not path.is_file():
                raise FileNotFoundError(f"lm_adapt.corpus={self.corpus} does not exist")


@dataclass
class LMAdaptRun:
    """The primary config of ``conf/lm_adapt.yaml``: the shared model/paths groups + our node."""

    model: ModelConfig = field(default_factory=ModelConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    lm_adapt: LMAdaptConfig = field(default_factory=LMAdaptConfig)


def register_configs() -> None:
    """Register ``lm_adapt_schema`` (conf/lm_adapt.yaml's first default) in the ConfigStore."""
    ConfigStore.instance().store(name="lm_adapt_schema", node=LMAdaptRun)


def to_lm_adapt_config(cfg: DictConfig) -> LMAdaptRun:
    """Composed DictConfig → validated ``LMAdaptRun`` (raises ValueError naming the bad value)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LMAdaptRun), plain))


def source_checkpoint(model: ModelConfig) -> str:
    """What LM adaptation starts from: ``model.path`` if set, else the T5.1.1 hub id."""
    if model.path:
        return model.path
    if "span_corruption" not in model.checkpoints:
        raise ValueError(
            f"model={model.size} names no T5.1.1 (span_corruption) checkpoint; "
            "set model.path to a local checkpoint directory"
        )
    return model.checkpoints["span_corruption"]


def output_dir(run: LMAdaptRun) -> Path:
    """``<paths.lm_adapt_dir>/<size>``: where ``step_<N>/``, ``last/`` and metrics go."""
    return Path(run.paths.lm_adapt_dir).expanduser() / run.model.size


# conf/lm_adapt.yaml's first default: there for `python -m repro.lm_adapt` and hydra.compose
register_configs()
