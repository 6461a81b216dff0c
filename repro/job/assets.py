"""What a job builds and loads before its first step: the assets the smoke/toy setting makes
itself (in the cache only), the frozen backbone and its tokenizer, and the memory plan it logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from repro.backbone import (
    checkpoint_config,
    family_of,
    load_backbone,
    load_tokenizer,
    set_dropout,
)
from repro.cli import RunError
from repro.config import CAUSAL_OBJECTIVES, SEPARATOR, Config
from repro.family import CAUSAL, T5
from repro.job.task import init_file_prompt
from repro.lora import causal_lora_modules
from repro.memory import start_lines
from repro.resolve import lora_rank_warning
from repro.tasks import get_task
from repro.tasks.base import data_dir_for, ensure_generated
from repro.tiny import ensure_tiny_t5

# What trains on a causal LM (repro.methods): a prompt in front of it, every weight, or LoRA.
CAUSAL_METHODS = ("prompt", "model", "model_multitask", "lora")

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
    family = family_of(config)
    if cfg.model.family not in (None, family):
        raise RunError(
            f"model.family={cfg.model.family} but {checkpoint} holds a {family} model "
            f"({config.model_type!r}); set model.family={family} or leave it unset (null)"
        )
    check_family(cfg, family, checkpoint, config.model_type)
    width = getattr(config, "d_model", None) or getattr(config, "hidden_size", None)
    if cfg.init.name == "from_file" and width:
        init_file_prompt(cfg, width)  # another width: refused before the weights load
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


def check_family(cfg: Config, family: str, checkpoint: str, model_type: str = "") -> None:
    """Refuse, before the weights load, what a run cannot do with a backbone of this family:
    T5's objectives on a causal LM and the reverse (the objective names the checkpoint's kind,
    docs/causal.md), the methods not built for causal LMs, and LoRA roles
    (``method.target_modules``) the architecture ``model_type`` has no layer for, or an
    architecture whose layers LoRA does not know (:func:`repro.lora.causal_lora_modules`)."""
    if family == CAUSAL and cfg.objective.name not in CAUSAL_OBJECTIVES:
        raise RunError(
            f"objective={cfg.objective.name} names a T5 checkpoint, but {checkpoint} is a causal "
            f"LM: its objective is one of {', '.join(CAUSAL_OBJECTIVES)} (objective=next_token "
            "for a pre-trained one)"
        )
    if family == T5:  # the causal-only model keys, set away from their defaults
        given = [
            f"model.{k}={getattr(cfg.model, k)!r}"
            for k, default in (("separator", SEPARATOR), ("positions", "peft"))
            if getattr(cfg.model, k) != default
        ]
        if given:
            raise RunError(
                f"{given[0].split('=')[0]} applies to causal LMs only, but {checkpoint} is a T5 "
                f"encoder-decoder (it reads no separator, and numbers no positions): drop "
                f"{given[0]}"
            )
    if family == T5 and cfg.objective.name in CAUSAL_OBJECTIVES:
        raise RunError(
            f"objective={cfg.objective.name} is a causal LM's, but {checkpoint} is a T5 "
            "encoder-decoder: use objective=lm_adapt, span_corruption or span_corruption_sentinel"
        )
    if family == CAUSAL and cfg.method.name not in CAUSAL_METHODS:
        raise RunError(
            f"method={cfg.method.name} is not built for causal LMs yet ({checkpoint} is one); "
            f"on a causal LM: method={' | '.join(CAUSAL_METHODS)} (docs/causal.md)"
        )
    if family == CAUSAL and cfg.method.name == "lora":
        try:
            causal_lora_modules(model_type, cfg.method.target_modules)
        except ValueError as err:
            raise RunError(f"{checkpoint}: {err}") from None


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
