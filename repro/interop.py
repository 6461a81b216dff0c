"""Prompts in other tools' formats, both ways: Hugging Face PEFT prompt-tuning adapters and the
official code's NumPy files, read into our fp32 prompt [P, H] and written out of a run.

Formats (no PEFT import here: PEFT is only the tests' oracle):

- **ours**: a directory with ``prompt.safetensors`` (key ``prompt``) + ``prompt.json``
  (:func:`repro.prompts.save_prompt`), or a run directory, whose ``best/`` is read.
- **official** (google-research/prompt-tuning): a ``.npy`` array [P, H], as its training writes
  and as its released prompts are shipped.
- **PEFT**: a directory with ``adapter_config.json`` (``peft_type: PROMPT_TUNING``) and
  ``adapter_model.safetensors`` (key ``prompt_embeddings``, [S·P, H] for S =
  ``num_transformer_submodules``). For a seq2seq model PEFT's default is S = 2, but its prompt
  tuning feeds only the first P rows to the encoder and never reads the rest, so reading takes
  rows [0, P): exactly what PEFT places in front of the encoder. Writing uses S = 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from repro.cli import first_line
from repro.files import publish_dir, refuse_existing
from repro.prompts import PROMPT_FILE, load_prompt, save_prompt

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_WEIGHTS_BIN = "adapter_model.bin"  # PEFT before safetensors became its default
PEFT_KEY = "prompt_embeddings"
# What a prompt file may be, for error messages.
SOURCES = (
    "a .npy array [P, H] (the official code's), a .safetensors prompt, a prompt directory "
    "(prompt.safetensors), a run directory (its best/), or a PEFT prompt-tuning adapter "
    "directory (adapter_config.json)"
)


def check_prompt_tensor(prompt: Any, source: str) -> Tensor:
    """A finite, non-empty 2-D float prompt [P, H] as fp32, or a ValueError naming ``source``."""
    if not isinstance(prompt, Tensor):
        prompt = torch.as_tensor(prompt)
    if prompt.dim() != 2 or 0 in prompt.shape:
        raise ValueError(
            f"{source} holds an array of shape {tuple(prompt.shape)}; a prompt is a non-empty "
            "2-D [prompt_len, d_model] array"
        )
    if not prompt.is_floating_point():
        raise ValueError(f"{source} holds {prompt.dtype} values; a prompt holds floats")
    prompt = prompt.to(torch.float32)
    if not torch.isfinite(prompt).all():
        raise ValueError(f"{source} holds non-finite values (nan or inf)")
    return prompt.contiguous()


# --- reading ---------------------------------------------------------------------------------


def read_npy(path: Path) -> Tensor:
    """An official ``.npy`` prompt [P, H] as fp32 (any float dtype; no pickled objects)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npy array ({first_line(err)})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        kind = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"{path} holds {kind} values; a prompt holds floats")
    return check_prompt_tensor(torch.from_numpy(array.astype(np.float32)), str(path))


def read_peft_adapter(directory: Path) -> tuple[Tensor, dict[str, Any]]:
    """The encoder prompt [P, H] of a PEFT prompt-tuning adapter directory, and its config.

    PEFT's seq2seq default stores ``num_transformer_submodules`` (2) copies' worth of rows;
    its prompt tuning prepends rows [0, P) to the encoder and never uses the rest, so those
    are what is read.
    """
    config_file = directory / PEFT_CONFIG
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{config_file} is not readable JSON ({first_line(err)})") from None
    kind = config.get("peft_type")
    if kind != "PROMPT_TUNING":
        raise ValueError(
            f"{directory} holds a PEFT {kind} adapter; only PROMPT_TUNING adapters are prompts"
        )
    task_type = config.get("task_type")
    if task_type not in (None, *PEFT_TASK_TYPES.values()):
        raise ValueError(
            f"{directory} holds a PEFT prompt for task_type {task_type}; only SEQ_2_SEQ_LM "
            "(in front of a T5 encoder) and CAUSAL_LM (in front of a causal LM) are prompts"
        )
    length = config.get("num_virtual_tokens")
    submodules = config.get("num_transformer_submodules") or 1
    if not isinstance(length, int) or length < 1:
        raise ValueError(
            f"{config_file}: num_virtual_tokens must be an integer >= 1; got {length!r}"
        )
    weights = directory / PEFT_WEIGHTS
    if weights.is_file():
        try:
            tensors = load_file(weights)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{weights} is truncated or corrupt ({first_line(err)})") from None
    elif (directory / PEFT_WEIGHTS_BIN).is_file():
        weights = directory / PEFT_WEIGHTS_BIN
        tensors = torch.load(weights, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{directory} has {PEFT_CONFIG} but no {PEFT_WEIGHTS}")
    if PEFT_KEY not in tensors:
        raise ValueError(f"{weights} holds no {PEFT_KEY!r} tensor (keys: {sorted(tensors)})")
    rows = check_prompt_tensor(tensors[PEFT_KEY], str(weights))
    if rows.shape[0] != length * submodules:
        raise ValueError(
            f"{weights} holds {rows.shape[0]} rows, but {PEFT_CONFIG} says num_virtual_tokens="
            f"{length} × num_transformer_submodules={submodules}"
        )
    meta = {
        "format": "peft",
        "backbone": config.get("base_model_name_or_path"),
        "peft_num_transformer_submodules": submodules,
        "peft_task_type": task_type,
        "files": [str(config_file), str(weights)],
    }
    return rows[:length].clone(), meta


def resolve_run_prompt(path: Path, which: str = "best") -> Path:
    """A run directory → its ``<which>/`` prompt directory; other paths are returned as they are.

    A multi-task run (``task=superglue``) holds one prompt per task: name the task's directory.
    """
    if not path.is_dir() or (path / PROMPT_FILE).exists() or (path / PEFT_CONFIG).exists():
        return path
    if (path / which / PROMPT_FILE).exists():
        return path / which
    tasks = sorted(d.name for d in path.iterdir() if (d / which / PROMPT_FILE).exists())
    if tasks:
        raise ValueError(
            f"{path} holds one prompt per task ({', '.join(tasks)}); give the task's directory, "
            f"e.g. {path / tasks[0]}"
        )
    return path


def check_prompt_file(path: str | os.PathLike, prompt_len: int) -> None:
    """``init=from_file``: the prompt at ``path`` is readable and ``prompt_len`` long.

    Raises:
        ValueError: naming the file's length and the ``prompt_len`` to set.
    """
    prompt, _ = read_prompt(path)
    if prompt.shape[0] != prompt_len:
        raise ValueError(
            f"init.path={path} holds a prompt of length {prompt.shape[0]} "
            f"(shape {tuple(prompt.shape)}) but prompt_len={prompt_len}; set "
            f"prompt_len={prompt.shape[0]}"
        )


def read_prompt(path: str | os.PathLike, which: str = "best") -> tuple[Tensor, dict[str, Any]]:
    """Read a prompt [P, H] (fp32) from any of :data:`SOURCES`.

    Returns:
        (prompt, meta): ``meta["format"]`` is ``npy`` | ``repro`` | ``peft``, ``meta["files"]``
        the files read, ``meta["backbone"]`` the checkpoint it was trained on if recorded, and
        our sidecar's keys for a prompt of ours.
    """
    path = resolve_run_prompt(Path(path).expanduser(), which)
    if not path.exists():
        raise FileNotFoundError(f"no prompt at {path}; expected {SOURCES}")
    if path.is_dir() and (path / PEFT_CONFIG).exists():
        return read_peft_adapter(path)
    if path.is_dir() and not (path / PROMPT_FILE).exists():
        raise ValueError(f"{path} holds no prompt; expected {SOURCES}")
    if path.suffix == ".npy":
        return read_npy(path), {"format": "npy", "files": [str(path)]}
    if path.is_file() and path.suffix != ".safetensors":
        raise ValueError(f"{path} is not a prompt file; expected {SOURCES}")
    try:
        prompt, meta = load_prompt(path)
    except KeyError:
        raise ValueError(f"{path} holds no 'prompt' tensor; expected {SOURCES}") from None
    except Exception as err:  # safetensors raises its own error type for a torn file
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable prompt ({first_line(err)})") from None
    file = path / PROMPT_FILE if path.is_dir() else path
    prompt = check_prompt_tensor(prompt, str(file))
    return prompt, {**meta, "format": "repro", "files": [str(file)]}


def prompt_identity(path: str | os.PathLike) -> dict[str, str]:
    """What a prompt file is, not where it lies: the SHA-256 of each file :func:`read_prompt`
    reads, by file name (for a run's fingerprint)."""
    _, meta = read_prompt(path)
    identity = {}
    for file in meta["files"]:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        identity[Path(file).name] = digest.hexdigest()
    return identity


def fit_prompt(prompt: Tensor, length: int, width: int, source: str) -> Tensor:
    """``prompt`` if it is [length, width]; else a ValueError naming both shapes."""
    if prompt.shape[1] != width:
        raise ValueError(
            f"{source} holds a prompt of width {prompt.shape[1]} (shape {tuple(prompt.shape)}) "
            f"but the model's d_model is {width}; a prompt only fits a model of its own width"
        )
    if prompt.shape[0] != length:
        raise ValueError(
            f"{source} holds a prompt of length {prompt.shape[0]} (shape {tuple(prompt.shape)}) "
            f"but prompt_len={length}; set prompt_len={prompt.shape[0]}"
        )
    return prompt


# --- writing ---------------------------------------------------------------------------------

FORMATS = ("peft", "npy", "repro")


# PEFT's task_type of a prompt in front of a backbone of each family (repro.family)
PEFT_TASK_TYPES = {"t5": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM"}


def peft_adapter_config(
    length: int, width: int, base_model: str | None, family: str = "t5"
) -> dict[str, Any]:
    """A PEFT ``adapter_config.json`` for a prompt [length, width] in front of a seq2seq
    model's encoder (``family="t5"``) or a causal LM's input (``"causal"``).

    ``num_layers`` / ``num_attention_heads`` are left null: PEFT fills them from the backbone
    it is loaded into (prompt tuning does not use them).
    """
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": PEFT_TASK_TYPES[family],
        "base_model_name_or_path": base_model,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": length,
        "token_dim": width,
        # the encoder only (what the paper prompts), or a causal LM's one stack
        "num_transformer_submodules": 1,
        "num_attention_heads": None,
        "num_layers": None,
        "prompt_tuning_init": "RANDOM",  # PEFT re-initialises nothing when it loads weights
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "modules_to_save": None,
        "auto_mapping": None,
    }


def write_prompt(
    prompt: Tensor,
    out: str | os.PathLike,
    to: str,
    *,
    base_model: str | None = None,
    base_model_local: bool = False,
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    family: str = "t5",
) -> Path:
    """Write ``prompt`` [P, H] as ``to`` (peft | npy | repro) at ``out``, which must not exist
    (an empty directory is fine) unless ``overwrite``. Written aside and renamed: never
    half-written, and an output replaced is whole until the new one is.

    Args:
        base_model: the backbone's hub id or local path (``peft``: required, it goes into
            ``base_model_name_or_path``).
        base_model_local: ``base_model`` is a local checkpoint's path relative to ``out``
            (``peft``: the model card says how to load it).
        meta: provenance (task, step, source, ...): our sidecar for ``repro``, the model card
            (README.md) for ``peft``.
        overwrite: replace an existing output of the same kind (a file for npy, else a
            directory).
        family: the backbone's (``peft``: its task_type and how the model card loads it).
    """
    if family not in PEFT_TASK_TYPES:
        raise ValueError(f"--family {family!r} is not allowed; choose one of: t5, causal")
    if to not in FORMATS:
        raise ValueError(f"--to {to!r} is not allowed; choose one of: {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    if not (out.is_dir() and not any(out.iterdir())):
        refuse_existing([out], overwrite)
    if out.exists() and out.is_dir() != (to != "npy"):
        kind = "a directory" if out.is_dir() else "a file"
        raise ValueError(
            f"{out} is {kind}; --to {to} writes {'a file' if to == 'npy' else 'a directory'}"
        )
    if to == "peft" and not base_model:
        raise ValueError(
            "the prompt records no backbone; give --base-model (its hub id or local path)"
        )
    prompt = check_prompt_tensor(prompt.detach().cpu(), "the prompt")
    meta = dict(meta or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    if to == "npy":
        if out.suffix != ".npy":
            raise ValueError(f"--to npy writes one .npy file; got {out}")
        staging = out.with_name(f".{out.name}.tmp")
        with open(staging, "wb") as f:
            np.save(f, prompt.numpy())
        os.replace(staging, out)
        return out

    def write(staging: Path) -> None:
        if to == "repro":
            save_prompt(prompt, staging, **meta)
        else:
            _write_peft(prompt, staging, base_model, base_model_local, meta, family)

    publish_dir(out, write)  # written aside, then swapped in (an old output moved aside first)
    return out


def _write_peft(
    prompt: Tensor, directory: Path, base_model: str, local: bool, meta: Mapping, family: str
) -> None:
    length, width = prompt.shape
    config = peft_adapter_config(length, width, base_model, family)
    auto = "AutoModelForSeq2SeqLM" if family == "t5" else "AutoModelForCausalLM"
    front = "the encoder input" if family == "t5" else "the input embeddings"
    (directory / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file({PEFT_KEY: prompt}, directory / PEFT_WEIGHTS, metadata={"format": "pt"})
    facts = "\n".join(f"- {k}: {v}" for k, v in meta.items() if v is not None)
    if local:  # PEFT would read a relative base_model_name_or_path from the current directory
        where = (
            f"the local checkpoint `{base_model}`, a path relative to this directory "
            "(`base_model_name_or_path`)"
        )
        load = (
            "adapter = Path(this_directory)\n"
            f'backbone = {auto}.from_pretrained(adapter / "{base_model}")\n'
            "model = PeftModel.from_pretrained(backbone, adapter)\n"
        )
    else:
        where = f"`{base_model}`"
        load = (
            f'backbone = {auto}.from_pretrained("{base_model}")\n'
            "model = PeftModel.from_pretrained(backbone, this_directory)\n"
        )
    (directory / "README.md").write_text(
        "# Prompt-tuning adapter written by repro.export\n\n"
        f"A soft prompt [{length}, {width}] in front of {front} of {where}, frozen, in "
        "PEFT's prompt-tuning layout with num_transformer_submodules=1.\n\n"
        f"```python\n{'from pathlib import Path' + chr(10) * 2 if local else ''}"
        f"from peft import PeftModel\nfrom transformers import {auto}\n\n"
        f"{load}```\n\n"
        f"{facts}\n"
    )
