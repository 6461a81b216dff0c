"""The paper's optimiser for the prompt: Adafactor as t5x runs it, written out in torch.

Neither stock torch Adafactor is this optimiser (see PAPER.md, Training): ``torch.optim.Adafactor``
always uses a relative step times RMS(θ), and ``transformers``' factors every 2-D second moment
and multiplies weight decay by the learning rate.

What the official code does — read in google-research/t5x ``t5x/adafactor.py``
(``Adafactor.apply_param_gradient`` and ``_decay_rate_pow``), with the prompt settings from
google-research/prompt-tuning ``prompt_tuning/configs/models/t5_1_1_prompt.gin`` (decay_rate 0.8,
step_offset 0, multiply_by_parameter_scale False, weight_decay_rate 1e-5; constant lr 0.3 from
``configs/runs/prompt_finetune.gin``). For one tensor at optimiser step ``i``:

    β     = 1 − (i + 1)^−decay_rate          # i from 0, so β = 0 on the first step
    v     ← β·v + (1 − β)·(g² + ε1)          # ε1 = 1e-30 added to g² *inside* the average
    y     = g / √v
    y     ← y / max(1, RMS(y) / clip)        # one RMS over the whole tensor
    θ     ← (1 − wd)·θ − lr·y                # decay of the *old* θ, not multiplied by lr

Both the decay and the step use the parameter value from before the update (t5x:
``new_param = (1.0 - weight_decay_rate) * param - subtrahend``); the gradient is cast to fp32 and
the second moment is kept in fp32. ``weight_decay_lr_scaled=True`` gives the torch/HF variant
θ ← (1 − lr·wd)·θ − lr·y instead (HF also decays the old θ first).

Where the step counter starts. In t5x the step passed to Adafactor is the optimiser state's global
step minus ``step_offset`` (0 in the prompt config). Prompt tuning restores a pre-trained T5X
checkpoint, step included (``prompt_finetune.gin``: "TRAIN_STEPS includes pretrain steps"), so in
the official runs β is computed from i ≈ 1.1M for the LM-adapted T5.1.1 and the (1 − β) warm-up of
the second moment never happens; the first updates are then always clipped to RMS 1. The paper
states β2_t = 1 − t^−0.8 for the prompt's own steps, which is the default here (``initial_step=0``);
pass ``initial_step`` = the backbone's pre-training steps to reproduce the official behaviour.

Factoring. t5x's factored estimate (``factored=True``) is kept for big matrices: a 2-D tensor is
factored only if both its dimensions are ≥ ``min_dim_size_to_factor`` (128). In the t5x version
read, a ≤2-D parameter falls back to that size heuristic even when the prompt's factor rule says
"unfactored", so a [100, d] prompt is unfactored but a [150, d] prompt would be factored; the
paper (and PAPER.md) say the prompt's second moment is not factored, hence ``factored=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class Adafactor(torch.optim.Optimizer):
    """Adafactor with a constant step size, no momentum and no parameter scaling (t5x rule).

    Args:
        params: parameters (or param groups) to optimise, e.g. ``[soft_prompt.weight]``.
        lr: absolute step size (the paper's 0.3). Read from the param group every step, so a
            torch LR scheduler may change it.
        decay_rate: exponent c of the second-moment decay β_i = 1 − (i+1)^−c, in (0, 1].
        clip_threshold: update clipping d: y ← y / max(1, RMS(y)/d); ``math.inf`` disables it.
        eps: ε1 added to g² before averaging (keeps v > 0 where g = 0).
        weight_decay: wd ≥ 0; θ ← (1 − wd)·θ per step (official t5x), not scaled by lr.
        weight_decay_lr_scaled: if True, use θ ← (1 − lr·wd)·θ instead (torch / HF convention).
        factored: factor the second moment of 2-D tensors whose two dims are both
            ≥ ``min_dim_size_to_factor`` into row and column averages (t5x heuristic).
        min_dim_size_to_factor: see ``factored``.
        initial_step: value of the step counter i at the first update (0 = paper; the official
            runs continue the pre-trained checkpoint's global step, see the module docstring).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.3,
        *,
        decay_rate: float = 0.8,
        clip_threshold: float = 1.0,
        eps: float = 1e-30,
        weight_decay: float = 1e-5,
        weight_decay_lr_scaled: bool = False,
        factored: bool = False,
        min_dim_size_to_factor: int = 128,
        initial_step: int = 0,
    ):
        _check_hparams(lr, decay_rate, clip_threshold, eps, weight_decay, initial_step)
        if min_dim_size_to_factor < 1:
            raise ValueError(f"min_dim_size_to_factor must be >= 1, got {min_dim_size_to_factor}")
        defaults = dict(
            lr=lr,
            decay_rate=decay_rate,
            clip_threshold=clip_threshold,
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_lr_scaled=weight_decay_lr_scaled,
            factored=factored,
            min_dim_size_to_factor=min_dim_size_to_factor,
            initial_step=initial_step,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _factor_dims(shape: torch.Size, group: dict[str, Any]) -> tuple[int, int] | None:
        """(dim averaged away for v_col, dim averaged away for v_row), or None if unfactored.

        As t5x: the smaller dim indexes ``v_row``, the larger ``v_col`` (the first dim counts as
        the smaller one on a tie); only tensors with exactly two dims are ever factored here.
        """
        if not group["factored"] or len(shape) != 2:
            return None
        if min(shape) < group["min_dim_size_to_factor"]:
            return None
        return (0, 1) if shape[0] <= shape[1] else (1, 0)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        # fp32 second moment even for bf16/fp16 parameters (t5x keeps v in fp32); fp64 stays fp64.
        dtype = torch.promote_types(p.dtype, torch.float32)
        state: dict[str, Any] = {"step": 0}
        dims = self._factor_dims(p.shape, group)
        if dims is None:
            state["v"] = torch.zeros(p.shape, dtype=dtype, device=p.device)
        else:
            small, large = dims
            state["v_row"] = torch.zeros(p.shape[small], dtype=dtype, device=p.device)
            state["v_col"] = torch.zeros(p.shape[large], dtype=dtype, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr = float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state.update(self._init_state(p, group))

                i = group["initial_step"] + state["step"]
                beta = 1.0 - (i + 1.0) ** -group["decay_rate"]
                dims = self._factor_dims(p.shape, group)
                v_ref = state["v"] if dims is None else state["v_row"]
                g = p.grad.to(v_ref.dtype)
                g_sq = g * g + group["eps"]

                if dims is None:
                    v = state["v"].mul_(beta).add_(g_sq, alpha=1.0 - beta)
                else:
                    small, large = dims
                    v_row = state["v_row"].mul_(beta).add_(g_sq.mean(large), alpha=1.0 - beta)
                    v_col = state["v_col"].mul_(beta).add_(g_sq.mean(small), alpha=1.0 - beta)
                    # Rank-1 estimate row ⊗ col / mean(row) (Adafactor paper, Alg. 4).
                    outer = torch.outer(v_row, v_col) if small == 0 else torch.outer(v_col, v_row)
                    v = outer / v_row.mean()
                y = g * v.rsqrt()
                rms = y.square().mean().sqrt()
                y = y / torch.clamp(rms / group["clip_threshold"], min=1.0)

                wd = group["weight_decay"]
                if group["weight_decay_lr_scaled"]:
                    wd = lr * wd
                # Both terms use the old θ: θ ← (1 − wd)·θ − lr·y.
                theta = p.to(v_ref.dtype)
                p.copy_(theta * (1.0 - wd) - lr * y)
                state["step"] += 1
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as torch does, but keep the saved second moments in their own (fp32) dtype.

        torch casts floating state to each parameter's dtype, which would round v to bf16 for a
        bf16 parameter; we put the saved tensors back at full precision afterwards.
        """
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(saved_id)
            if saved is None:
                continue
            for key, value in saved.items():
                if isinstance(value, Tensor):
                    self.state[p][key] = value.to(device=p.device, copy=True)


def _check_hparams(
    lr: float,
    decay_rate: float,
    clip_threshold: float,
    eps: float,
    weight_decay: float,
    initial_step: int,
) -> None:
    """Raise ValueError naming the first hyper-parameter outside its allowed range."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not 0 < decay_rate <= 1:
        raise ValueError(f"decay_rate must be in (0, 1] (β_i = 1 − (i+1)^−c), got {decay_rate!r}")
    if not clip_threshold > 0:
        raise ValueError(f"clip_threshold must be > 0 (math.inf disables), got {clip_threshold!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if not 0 <= weight_decay < 1:
        raise ValueError(f"weight_decay must be in [0, 1), got {weight_decay!r}")
    if not (isinstance(initial_step, int) and initial_step >= 0):
        raise ValueError(f"initial_step must be an int >= 0, got {initial_step!r}")


def build_prompt_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    *,
    lr: float = 0.3,
    decay_rate: float = 0.8,
    clip_threshold: float = 1.0,
    eps: float = 1e-30,
    weight_decay: float = 1e-5,
    weight_decay_lr_scaled: bool = False,
    initial_step: int = 0,
) -> Adafactor:
    """The paper's prompt optimiser: constant lr 0.3, β2 exponent 0.8, clip 1, wd 1e-5, unfactored.

    Args:
        params: the trainable parameters (the soft prompt only).
        lr, decay_rate, clip_threshold, eps, weight_decay, weight_decay_lr_scaled,
            initial_step: see :class:`Adafactor`; defaults are the paper's values with the
            official wd convention.

    Returns:
        An :class:`Adafactor` with an unfactored second moment.
    """
    return Adafactor(
        params,
        lr=lr,
        decay_rate=decay_rate,
        clip_threshold=clip_threshold,
        eps=eps,
        weight_decay=weight_decay,
        weight_decay_lr_scaled=weight_decay_lr_scaled,
        factored=False,
        initial_step=initial_step,
    )
