"""A composed config resolved against the world: what ``repro.config`` cannot know from the
YAML alone.

``repro.config.to_config`` checks values; :func:`load_config` then settles what depends on
things outside the config, each by the floor that owns it:

- ``init=from_file``: the prompt file is readable and as long as the run's prompt
  (``repro.interop.check_prompt_file``);
- ``trainer.grad_accum=auto``: the fewest micro-batches whose memory estimate fits
  ``cost.gpu_memory_gb`` (``repro.memory.auto_grad_accum``), resolved once, so the code below
  sees an int;
- ``method=lora``: ``method.r`` against the widths of the layers it adapts, in the backbone's
  shape (a local checkpoint's config.json, else conf/model's keys; ``repro.estimate.shape_of``):
  refused above their largest width (``repro.methods.check_lora_rank``), before anything loads;
  the job logs the warning for an r above their smallest width (:func:`lora_rank_warning`).

Every entry point that turns a composed config into a run (the job, the cost report, the
launchers, reading a finished run back) loads it through here.
"""

from __future__ import annotations

from omegaconf import DictConfig

from repro.config import Config, to_config
from repro.estimate import lora_shapes, shape_of
from repro.memory import auto_grad_accum
from repro.methods import check_lora_rank
from repro.trainer_config import GRAD_ACCUM_AUTO


def resolve(cfg: Config) -> Config:
    """Settle ``cfg`` against the world, in place; returns it."""
    if cfg.init.name == "from_file":
        # imported here: it reads prompt tensors (torch), which `python -m repro.cost` never needs
        from repro.interop import check_prompt_file

        check_prompt_file(cfg.init.path, cfg.prompt_len)
    lora_rank_warning(cfg)  # an r no layer can use: refused before anything loads
    if cfg.trainer.grad_accum == GRAD_ACCUM_AUTO:
        cfg.trainer.grad_accum = auto_grad_accum(cfg)
        cfg.trainer.grad_accum_auto = True
    return cfg


def lora_widths(cfg: Config) -> dict[str, tuple[int, int]]:
    """{target module: (in, out)} of the layers ``method=lora`` adapts, from the backbone's
    shape; {} for another method, or when the shape is unknown before loading (a hub id whose
    conf/model gives no shape: then the rank is not checked). On a causal LM a role is the
    layer it maps to (``repro.lora``: q, k and v are GPT-NeoX's one fused layer).

    Raises:
        ValueError: a role the backbone's architecture has no layer for (a causal LM's).
    """
    if cfg.method.name != "lora":
        return {}
    try:
        shape = shape_of(cfg.model)
    except (ValueError, KeyError, OSError):
        return {}
    # a role the architecture has no layer for (wi on a gated MLP): refused here, naming them all
    lora_shapes(shape, cfg.method.target_modules, 1)
    widths = {}
    for name in cfg.method.target_modules:
        pair = lora_shapes(shape, [name], 1)[:2]  # [A (1, in), B (out, 1)]; [] if none match
        if pair:
            widths[name] = (pair[0][1], pair[1][0])
    return widths


def lora_rank_warning(cfg: Config) -> str | None:
    """The warning for a LoRA rank above the smallest width of the layers it adapts (None if
    none); ValueError for one above their largest (:func:`repro.methods.check_lora_rank`)."""
    if cfg.method.name != "lora":
        return None
    return check_lora_rank(cfg.method.r, lora_widths(cfg))


def load_config(cfg: DictConfig) -> Config:
    """Composed DictConfig → validated, resolved ``Config`` (ValueError naming a bad value)."""
    return resolve(to_config(cfg))
