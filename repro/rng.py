"""The random state a resume must restore: torch's, Python's and (if any) CUDA's generators.

Dropout draws from torch's generator and data order comes from ``(seed, epoch)`` alone, so a
checkpoint that keeps :func:`rng_state` and a resume that calls :func:`set_rng_state` draw as
if the run never stopped. The trainer, packed training and LM adaptation all keep it this way;
an out-of-memory retry uses it to redo a step with the same draws.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """This process's torch, Python and (if any) CUDA RNG states."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
