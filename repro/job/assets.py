"""What a job builds and loads before its first step: the assets the smoke/toy setting makes
itself (in the cache only), the frozen backbone and its tokenizer, and the memory plan it logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from repro.backbone import checkpoint_config, load_backbone, load_tokenizer, set_dropout
from repro.cli import RunError
from repro.config import Config
from repro.job.task import init_file_prompt
from repro.memory import start_lines
from repro.resolve import lora_rank_warning
from repro.tasks import get_task
from repro.tasks.base import data_dir_for, ensure_generated
from repro.tiny import ensure_tiny_t5

# The logger its lines have always carried (``[repro.run]``).
log = logging.getLogger("repro.run")


def prepare_assets(cfg: Config, names) -> None:
    """Build what the smoke/toy setting makes itself, in the cache only: the tiny model (at its
    default place, never at a path the user gave) and generated task data (never into a given
    ``task.data_dir``)."""
    if cfg.model.build_tiny and cfg.model.path:
        default = Path(cfg.paths.cache_dir).expanduser() / "tiny-t5"
        path = Path(cfg.model.path).expanduser()
        if path.is_file():
            raise RunError(
                f"model.path={cfg.model.path} is a file, not a checkpoint directory; give the "
                "directory that holds its config.json and weights (model.safetensors)"
            )
        if path.resolve() == default.resolve():
            ensure_tiny_t5(path)
        elif not (path / "config.json").exists():
            raise RunError(
                f"model.path={cfg.model.path} holds no checkpoint (no config.json); the tiny "
                f"model is only built at its default place {default} (leave model.path unset)"
            )
    for name in names:
        task = get_task(name)
        if task.generate is not None and not cfg.task.data_dir:
            ensure_generated(task, data_dir_for(task, None, cfg.paths.cache_dir))


def load_model(cfg: Config, checkpoint: str):
    """(tokenizer, backbone with the configured dropout) of a job."""
    # Cheap checks first (config, files, tokenizer: seconds), then the weights (minutes for
    # XXL): each refuses a checkpoint it cannot use with one line naming it.
    config, _, _ = checkpoint_config(checkpoint, cfg.model.trust_remote_code)
    if cfg.init.name == "from_file" and getattr(config, "d_model", None):
        init_file_prompt(cfg, config.d_model)  # another width: refused before the weights load
    tokenizer = load_tokenizer(checkpoint, trust_remote_code=cfg.model.trust_remote_code)
    backbone = load_backbone(
        checkpoint,
        dtype=cfg.model.dtype,
        attn_implementation=cfg.model.attn_implementation,
        device_map=cfg.model.device_map,
        trust_remote_code=cfg.model.trust_remote_code,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        fused_gelu=cfg.model.fused_gelu,
    )
    set_dropout(backbone, cfg.model.dropout)
    return tokenizer, backbone


def log_memory_plan(cfg: Config) -> None:
    """Log the job's micro-batches and memory estimate as it starts, and warn (with the switches
    that would make it fit) if the estimate exceeds ``cost.gpu_memory_gb``
    (:func:`repro.memory.start_lines`), or if a LoRA rank exceeds the smallest width of the
    layers it adapts (:func:`repro.resolve.lora_rank_warning`)."""
    info, warning = start_lines(cfg)
    if info:
        log.info(info)
    if warning:
        log.warning(warning)
    rank = lora_rank_warning(cfg)  # method.r above a layer's width: parameters without rank
    if rank:
        log.warning(rank)
