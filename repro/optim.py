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

β and 1 − β are float32 numbers, as in t5x (``_decay_rate_pow``: t = float32(i) + 1,
β = 1 − t^−c and ``mixing_rate = 1 − β``, all in float32). It matters at the official step
counter (i ≈ 1.1M below): there 1 − β ≈ 1.4e-5 and float32 rounding of β moves it by ~1.5e-3
relative to the float64 value. A clipped update hardly notices (it is invariant to a common scale
of v), but every unclipped one does, and the prompts drift apart from there on.

Factored second moment (t5x ``_factored_dims`` and the factored branch of
``apply_param_gradient``). With d1 = the second-largest and d0 = the largest dim of the tensor:

    v_row ← β·v_row + (1 − β)·mean(g² + ε1, over d0)
    v_col ← β·v_col + (1 − β)·mean(g² + ε1, over d1)
    y     = g · (v_row / mean(v_row))^−½ (broadcast along d0) · v_col^−½ (broadcast along d1)

then the same clipping and weight decay. Which tensors are factored is ``factored``
(repro/factoring.py): ``"auto"`` = t5x's rule, only if the second-largest dim is
≥ ``min_dim_size_to_factor`` (128); ``"true"`` = every tensor of rank ≥ 2 (transformers'
Adafactor); ``"false"`` = never. Note t5x's own ``factored=True`` is our ``"auto"``.

Where the step counter starts. In t5x the step passed to Adafactor is the optimiser state's global
step minus ``step_offset`` (0 in the prompt config). Prompt tuning restores a pre-trained T5X
checkpoint, step included (``prompt_finetune.gin``: "TRAIN_STEPS includes pretrain steps"), so in
the official runs β is computed from i ≈ 1.1M for the LM-adapted T5.1.1 and the (1 − β) warm-up of
the second moment never happens; the first updates are then always clipped to RMS 1. The paper
states β2_t = 1 − t^−0.8 for the prompt's own steps, which is the default here (``initial_step=0``);
pass ``initial_step`` = the backbone's pre-training steps to reproduce the official behaviour.

Which rule the prompt gets. The prompt-tuning configs mark the prompt's length axis "do not
factor", but t5x (``_parse_rule``) ignores a factor rule for any parameter of rank ≤ 2 without a
batch axis and falls back to the size heuristic. So in the official runs a [p, d] prompt's second
moment (d ≥ 128 for every T5 size) is unfactored for p ≤ 127 and factored for p ≥ 128: the
p = 150 point of Figure 3(a) was trained with a factored v (PAPER.md, Training). Hence the
default ``factored="auto"``; ``"false"`` gives what the gin file intends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repro.factoring import factored_dims, parse_factored
from repro.trainer_config import check_optimizer_hparams


def decay_rates(i: int, decay_rate: float) -> tuple[float, float]:
    """(β, 1 − β) at optimiser step ``i`` (from 0), computed in float32 as t5x does.

    t5x ``_decay_rate_pow``: t = float32(i) + 1, β = 1 − t^−c; ``mixing_rate = 1 − β``, each
    operation rounded to float32. Returned as Python floats holding those float32 values exactly.
    """
    one = np.float32(1.0)
    t = np.float32(i) + one
    beta = one - t ** np.float32(-decay_rate)
    return float(beta), float(one - beta)


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
        factored: ``"auto"`` (t5x's rule: factor the second moment into row and column averages
            only if the tensor's second-largest dim is ≥ ``min_dim_size_to_factor``),
            ``"true"`` (factor every tensor of rank ≥ 2) or ``"false"`` (never); a bool means
            ``"true"`` / ``"false"``; strings are case-insensitive. t5x's ``factored=True`` is
            ``"auto"`` here.
        min_dim_size_to_factor: the size threshold of ``factored="auto"`` (t5x: 128).
        initial_step: value of the step counter i at the first update (0 = paper; the official
            runs continue the pre-trained checkpoint's global step, see the module docstring).
        parameter_scale: t5x's ``multiply_by_parameter_scale``: each tensor's step is
            lr × max(eps2, RMS(θ)) with θ before the update. Off for prompts (the paper), on in
            t5x's defaults, which model tuning uses (docs/model_tuning.md).
        eps2: t5x's ``epsilon2``, the least parameter scale (1e-3).
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
        factored: str | bool = "auto",
        min_dim_size_to_factor: int = 128,
        initial_step: int = 0,
        parameter_scale: bool = False,
        eps2: float = 1e-3,
    ):
        check_optimizer_hparams(lr, decay_rate, clip_threshold, eps, weight_decay, initial_step)
        factored = parse_factored(factored)
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
            parameter_scale=parameter_scale,
            eps2=eps2,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _factor_dims(shape: torch.Size, group: dict[str, Any]) -> tuple[int, int] | None:
        """t5x's ``(d1, d0)`` = (second-largest, largest dim), or None if v is not factored.

        ``v_row`` is g² averaged over d0 (so it is indexed by d1), ``v_col`` averaged over d1.
        """
        return factored_dims(shape, group["factored"], group["min_dim_size_to_factor"])

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        # fp32 second moment even for bf16/fp16 parameters (t5x keeps v in fp32); fp64 stays fp64.
        dtype = torch.promote_types(p.dtype, torch.float32)
        state: dict[str, Any] = {"step": 0}
        dims = self._factor_dims(p.shape, group)
        if dims is None:
            state["v"] = torch.zeros(p.shape, dtype=dtype, device=p.device)
        else:
            d1, d0 = dims
            shape = list(p.shape)
            row_shape = shape[:d0] + shape[d0 + 1 :]
            col_shape = shape[:d1] + shape[d1 + 1 :]
            state["v_row"] = torch.zeros(row_shape, dtype=dtype, device=p.device)
            state["v_col"] = torch.zeros(col_shape, dtype=dtype, device=p.device)
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
                beta, mixing_rate = decay_rates(i, group["decay_rate"])  # float32, as t5x
                dims = self._factor_dims(p.shape, group)
                _check_state_matches(state, dims, p.shape, group["factored"])
                v_ref = state["v"] if dims is None else state["v_row"]
                g = p.grad.to(v_ref.dtype)
                g_sq = g * g + group["eps"]

                if dims is None:
                    v = state["v"].mul_(beta).add_(mixing_rate * g_sq)
                    y = g * v.rsqrt()
                else:
                    d1, d0 = dims
                    v_row = state["v_row"].mul_(beta).add_(mixing_rate * g_sq.mean(d0))
                    v_col = state["v_col"].mul_(beta).add_(mixing_rate * g_sq.mean(d1))
                    reduced_d1 = d1 - 1 if d0 < d1 else d1  # d1's index in v_row (d0 removed)
                    row_col_mean = v_row.mean(reduced_d1, keepdim=True)
                    row_factor = (v_row / row_col_mean).rsqrt()
                    col_factor = v_col.rsqrt()
                    y = g * row_factor.unsqueeze(d0) * col_factor.unsqueeze(d1)
                rms = y.square().mean().sqrt()
                y = y / torch.clamp(rms / group["clip_threshold"], min=1.0)

                wd = group["weight_decay"]
                if group["weight_decay_lr_scaled"]:
                    wd = lr * wd
                # Both terms use the old θ: θ ← (1 − wd)·θ − lr·y.
                theta = p.to(v_ref.dtype)
                step_size = lr
                if group.get("parameter_scale"):  # t5x: lr × max(eps2, RMS(θ_old))
                    step_size = lr * torch.clamp(theta.square().mean().sqrt(), min=group["eps2"])
                p.copy_(theta * (1.0 - wd) - step_size * y)
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


def _check_state_matches(
    state: dict[str, Any], dims: tuple[int, int] | None, shape: torch.Size, factored: Any
) -> None:
    """Raise if a loaded state was saved under another factoring than the one in use."""
    if (dims is None) != ("v" in state):
        saved = "unfactored (v)" if "v" in state else "factored (v_row, v_col)"
        raise ValueError(
            f"optimizer state for a {list(shape)} parameter is {saved}, but factored={factored!r} "
            "says otherwise; resume with the factored setting the state was saved with"
        )


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
    factored: str | bool = "auto",
    min_dim_size_to_factor: int = 128,
    parameter_scale: bool = False,
    eps2: float = 1e-3,
) -> Adafactor:
    """The paper's prompt optimiser: constant lr 0.3, β2 exponent 0.8, clip 1, wd 1e-5.

    Args:
        params: the trainable parameters (the soft prompt; every backbone weight in model
            tuning, with ``parameter_scale=True``).
        lr, decay_rate, clip_threshold, eps, weight_decay, weight_decay_lr_scaled,
            initial_step, factored, min_dim_size_to_factor: see :class:`Adafactor`; defaults
            are the official values (wd not scaled by lr; t5x's factoring rule, so a [p, d]
            prompt's second moment is factored when p ≥ 128 and d ≥ 128).

    Returns:
        An :class:`Adafactor`.
    """
    return Adafactor(
        params,
        lr=lr,
        decay_rate=decay_rate,
        clip_threshold=clip_threshold,
        eps=eps,
        weight_decay=weight_decay,
        weight_decay_lr_scaled=weight_decay_lr_scaled,
        factored=factored,
        min_dim_size_to_factor=min_dim_size_to_factor,
        initial_step=initial_step,
        parameter_scale=parameter_scale,
        eps2=eps2,
    )
