"""What LM adaptation writes: ``step_<N>/`` (a plain HF checkpoint + manifest) at each listed
step, and ``last/`` to resume from (weights, optimizer, step, RNG and data position of every
rank); each written aside and swapped in, so a crash leaves the old one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from repro.files import write_json_atomic

STATE_FILE = "train_state.pt"
MANIFEST = "manifest.json"


def _swap_in(staging: Path, directory: Path) -> None:
    """Replace ``directory`` by ``staging``; a crash leaves the old one as ``.<name>.old``."""
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _staging(directory: Path) -> Path:
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def save_step_checkpoint(directory: Path, model, tokenizer, manifest: dict[str, Any]) -> None:
    """A standard HF checkpoint (config, safetensors, tokenizer) + manifest, written aside."""
    staging = _staging(directory)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_json_atomic(staging / MANIFEST, manifest)
    _swap_in(staging, directory)


def save_state(
    directory: Path,
    model,
    optimizer,
    *,
    step: int,
    positions: list[list[int]],
    rngs: list[dict[str, Any]],
    fingerprint: dict[str, Any],
    manifest: dict[str, Any],
) -> None:
    """``last/``: weights (safetensors), optimizer, step, RNG and data position of every rank."""
    staging = _staging(directory)
    model.save_pretrained(staging)
    torch.save(
        {
            "step": step,
            "positions": positions,
            "optimizer": optimizer.state_dict(),
            "rng": rngs,
            "fingerprint": fingerprint,
        },
        staging / STATE_FILE,
    )
    write_json_atomic(staging / MANIFEST, manifest)
    _swap_in(staging, directory)


def find_state(directory: Path) -> Path | None:
    """``last/``, or the previous one if a crash hit mid-swap; None if there is none."""
    for candidate in (directory, directory.with_name(f".{directory.name}.old")):
        if (candidate / STATE_FILE).exists():
            return candidate
    return None
