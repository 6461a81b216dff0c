"""Which checkpoint a run's backbone is: size × objective × LM-adaptation steps × source.

(On a causal LM, ``lm_adapt_steps`` counts pre-training steps: ``model.steps_checkpoint``.)

:func:`checkpoint_for` names what a run loads: a local ``model.path``; Google's released
checkpoint of the model's ``checkpoints``; or, for LM adaptation Google never released (or with
``lm_adapt_source=own``), ``repro.lm_adapt``'s ``<paths.lm_adapt_dir>/<size>/step_<N>/``, refused
in one line naming the command that makes it when it is not there. What the config's
``lm_adapt_source`` means for a run's axes (:func:`repro.config.resolve_lm_adapt_source`) is
part of the config itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from repro.cli import RunError
from repro.config import CONF_DIR, RELEASED_LM_ADAPT_STEPS, Config, is_released_lm_adapt


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
    # a causal LM's checkpoint after lm_adapt_steps pre-training steps (Pythia's step<N>)
    pretrain = cfg.model.steps_checkpoint
    other_steps = cfg.lm_adapt_steps != cfg.model.lm_adapt_checkpoint_steps
    if pretrain and cfg.objective.name == "next_token" and other_steps:
        return pretrain.replace("{steps}", str(cfg.lm_adapt_steps))
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
