"""A composed config resolved against the world: what ``repro.config`` cannot know from the
YAML alone.

``repro.config.to_config`` checks values; :func:`load_config` then settles what depends on
things outside the config, each by the floor that owns it:

- ``init=from_file``: the prompt file is readable and as long as the run's prompt
  (``repro.interop.check_prompt_file``);
- ``trainer.grad_accum=auto``: the fewest micro-batches whose memory estimate fits
  ``cost.gpu_memory_gb`` (``repro.memory.auto_grad_accum``), resolved once, so the code below
  sees an int.

Every entry point that turns a composed config into a run (the job, the cost report, the
launchers, reading a finished run back) loads it through here.
"""

from __future__ import annotations

from omegaconf import DictConfig

from repro.config import Config, to_config
from repro.memory import auto_grad_accum
from repro.trainer_config import GRAD_ACCUM_AUTO


def resolve(cfg: Config) -> Config:
    """Settle ``cfg`` against the world, in place; returns it."""
    if cfg.init.name == "from_file":
        # imported here: it reads prompt tensors (torch), which `python -m repro.cost` never needs
        from repro.interop import check_prompt_file

        check_prompt_file(cfg.init.path, cfg.prompt_len)
    if cfg.trainer.grad_accum == GRAD_ACCUM_AUTO:
        cfg.trainer.grad_accum = auto_grad_accum(cfg)
        cfg.trainer.grad_accum_auto = True
    return cfg


def load_config(cfg: DictConfig) -> Config:
    """Composed DictConfig → validated, resolved ``Config`` (ValueError naming a bad value)."""
    return resolve(to_config(cfg))
