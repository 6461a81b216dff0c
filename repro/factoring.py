"""When Adafactor factors a second moment: t5x's size rule, without torch.

Shared by the optimiser (repro/optim.py), the config check (repro/trainer_config.py) and the dry-run
memory estimate (repro/cost.py), which must not import torch.

``factored`` is one of:

- ``"auto"``: t5x's heuristic (``Adafactor._factored_dims`` in google-research/t5x
  ``t5x/adafactor.py``, which is what t5x's ``factored=True`` does for a rank-≤2 parameter):
  factor only if the second-largest dimension is ≥ ``min_dim_size_to_factor`` (128).
- ``"true"``: factor every tensor of rank ≥ 2, whatever its size (as transformers' Adafactor).
- ``"false"``: never factor (what the prompt-tuning gin's "do not factor" rule intends).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

FACTORED_CHOICES = ("auto", "true", "false")


def parse_factored(value: object, what: str = "factored") -> str:
    """``"auto"`` / ``"true"`` / ``"false"`` from a bool or a case-insensitive string.

    Hydra hands a ``str`` field ``"True"`` for ``factored=true``, hence the case folding.

    Raises:
        ValueError: naming the bad value and the allowed ones.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.lower() in FACTORED_CHOICES:
        return value.lower()
    raise ValueError(
        f"{what}={value!r} is not allowed; choose one of: {', '.join(FACTORED_CHOICES)}"
    )


def factored_dims(
    shape: Sequence[int], factored: object, min_dim_size_to_factor: int = 128
) -> tuple[int, int] | None:
    """``(d1, d0)`` = (second-largest dim, largest dim) if the second moment is factored, else None.

    As t5x: the dims are ordered by size with a stable sort (ties keep their order, as
    ``np.argsort`` does on a short shape); ``v_row`` is the mean of g² over ``d0`` and ``v_col``
    the mean over ``d1``. ``"true"`` skips the size test; tensors of rank < 2 are never factored.
    """
    mode = parse_factored(factored)
    if mode == "false" or len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda k: shape[k])
    d1, d0 = order[-2], order[-1]
    if mode == "auto" and shape[d1] < min_dim_size_to_factor:
        return None
    return d1, d0


def second_moment_numel(
    shape: Sequence[int], factored: object, min_dim_size_to_factor: int = 128
) -> int:
    """Floats Adafactor keeps for one tensor's second moment: p + d for a factored [p, d], else p·d."""
    dims = factored_dims(shape, factored, min_dim_size_to_factor)
    if dims is None:
        return prod(shape)
    d1, d0 = dims
    v_row = prod(n for k, n in enumerate(shape) if k != d0)
    v_col = prod(n for k, n in enumerate(shape) if k != d1)
    return v_row + v_col
