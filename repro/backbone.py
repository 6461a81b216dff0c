"""The frozen backbone as files: load a checkpoint and its tokenizer, save and reload it.

``load_backbone`` loads a T5-family encoder-decoder or a decoder-only causal LM (hub id, hub id
``@revision``, or local directory; the family is the checkpoint's own, :func:`family_of`) and
freezes it; ``load_tokenizer`` refuses a tokenizer that cannot be the model's. Both check what they are
given first (``checkpoint_config``, ``check_checkpoint_files``) so that a bad path, a corrupt file
or an unreachable hub is one line, not a library traceback. ``save_backbone`` and
``load_backbone_weights`` write and read back a whole backbone (model tuning's ``best/``).
What is trained on top of it lives in ``repro.model``.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from repro.hub import load_from_cache_only

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


# The two families a backbone can be (repro.config.FAMILIES), read from its config.json.
T5, CAUSAL = "t5", "causal"


def family_of(config) -> str:
    """``"t5"`` for an encoder-decoder checkpoint, ``"causal"`` for a decoder-only one: what its
    config says (``is_encoder_decoder``), never its name."""
    return T5 if getattr(config, "is_encoder_decoder", False) else CAUSAL


def split_revision(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """``"EleutherAI/pythia-160m@step1000"`` → (hub id, revision); anything else (a local
    directory, a hub id without ``@``) → (itself, None)."""
    text = str(name_or_path)
    if "@" in text and not Path(text).expanduser().exists():
        name, _, revision = text.rpartition("@")
        if name and revision and "/" not in revision:
            return name, revision
    return text, None


def checkpoint_config(name_or_path: str | os.PathLike, trust_remote_code: bool = False):
    """Check a checkpoint without reading its weights: ``(config, source, cache_only)``.

    A local directory must exist and hold a readable ``config.json`` and intact safetensors
    headers (:func:`check_checkpoint_files`); a hub id (``@revision`` allowed) must be reachable
    or cached (``repro.hub``); the model must be a T5-family encoder-decoder or a causal LM.
    Each failure is one line.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name_or_path, revision = split_revision(name_or_path)
    local = Path(name_or_path).expanduser()
    if local.is_file():
        raise NotADirectoryError(
            f"{name_or_path} is a file, not a checkpoint directory; give the directory that "
            "holds its config.json and weights (model.safetensors)"
        )
    if str(name_or_path).startswith((".", "/", "~")) and not local.is_dir():
        raise FileNotFoundError(f"checkpoint directory {name_or_path} does not exist")
    if local.is_dir():
        source, cache_only = str(local), False
        check_checkpoint_files(local)
    else:  # a hub id: fail in seconds, not after minutes of retries, when the hub is away
        source, cache_only = str(name_or_path), load_from_cache_only(str(name_or_path))
    try:
        config = AutoConfig.from_pretrained(
            source,
            trust_remote_code=trust_remote_code,
            local_files_only=cache_only,
            **({"revision": revision} if revision else {}),
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" and not local.is_dir()
        hint = " (HF_HUB_OFFLINE=1 is set: pass a local directory instead)" if offline else ""
        raise OSError(f"cannot load a checkpoint from {name_or_path!r}{hint}: {err}") from None
    except Exception as err:  # a config.json transformers cannot read (unknown type, bad field)
        if not local.is_dir():
            raise
        raise ValueError(f"cannot use {local / 'config.json'}: {_first_line(err)}") from None
    causal_lm = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or trust_remote_code
    if family_of(config) == CAUSAL and not causal_lm:
        raise ValueError(
            f"{name_or_path} holds a {config.model_type!r} model, neither a T5-family "
            "encoder-decoder (t5, mt5, umt5, ...) nor a causal LM (gpt2, gpt_neox, llama, "
            "qwen2, ...): prompt tuning here needs one of those"
        )
    return config, source, cache_only


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    fused_gelu: bool = True,
) -> nn.Module:
    """Load a T5-family encoder-decoder or a causal LM (:func:`family_of` its config), frozen:
    every parameter has ``requires_grad=False``.

    Args:
        name_or_path: a hub id (``google/t5-base-lm-adapt``; ``EleutherAI/pythia-160m@step1000``
            for a revision) or a local directory.
        dtype: weights are loaded directly in this dtype (``dtype=`` of ``from_pretrained``:
            each tensor is cast as it is read, so bf16 never materialises an fp32 model).
        attn_implementation: "eager", "sdpa", ...; None lets transformers choose.
        device_map: passed to ``from_pretrained`` ("auto" spreads a model that does not fit one
            GPU over all visible GPUs; needs ``accelerate``).
        trust_remote_code: off unless the user sets it.
        gradient_checkpointing: recompute each block's activations in backward (train mode).
            Non-reentrant, so the gradient still reaches a prompt in front of frozen layers.
        fused_gelu: compute T5.1.1's gelu_new with torch's one-kernel tanh GELU (`fuse_gelu`).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config, source, cache_only = checkpoint_config(name_or_path, trust_remote_code)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if cache_only:
        kwargs["local_files_only"] = True
    revision = split_revision(name_or_path)[1]
    if revision:
        kwargs["revision"] = revision
    auto = AutoModelForSeq2SeqLM if family_of(config) == T5 else AutoModelForCausalLM
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = auto.from_pretrained(source, **kwargs)
    except (ValueError, ImportError) as err:
        text = str(err)
        if attn_implementation and (attn_implementation in text or "attention" in text.lower()):
            reason = text.splitlines()[0].split(". ")[0].rstrip(".")
            raise ValueError(
                f"model.attn_implementation={attn_implementation!r} is not supported for "
                f"{config.model_type} by the installed transformers ({reason}); "
                "use sdpa or eager"
            ) from None
        if device_map is not None and "accelerate" in str(err).lower():
            raise ValueError(
                f"model.device_map={device_map!r} needs the accelerate package: "
                "pip install accelerate"
            ) from None
        raise
    return prepare_backbone(
        model, gradient_checkpointing=gradient_checkpointing, fused_gelu=fused_gelu
    )


def prepare_backbone(
    model: nn.Module, *, gradient_checkpointing: bool = False, fused_gelu: bool = True
) -> nn.Module:
    """What :func:`load_backbone` does to a model once it is loaded (also to one built in
    memory, as benchmarks/gpu_check.py builds T5 at the paper's shapes): freeze every weight,
    logits in fp32 under autocast, T5.1.1's GELU in one kernel, activation checkpointing."""
    model.requires_grad_(False)
    fp32_logits(model)
    if fused_gelu:
        fuse_gelu(model)
    if gradient_checkpointing:
        # Non-reentrant checkpointing tracks gradients through the recomputation even though
        # no weight of the block requires one: the prompt's gradient is unchanged.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def check_checkpoint_files(directory: Path) -> None:
    """Refuse, in one line naming the file, a local checkpoint transformers would fail on with a
    library traceback: no or unparsable ``config.json``, a truncated ``*.safetensors``."""
    from safetensors import SafetensorError, safe_open

    config = directory / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"checkpoint directory {directory} has no config.json "
            "(save_pretrained writes it next to model.safetensors)"
        )
    try:
        parsed = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{config} is not valid JSON ({_first_line(err)})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{config} holds a JSON {type(parsed).__name__}, not a config object")
    for weights in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):  # reads and checks the header only
                pass
        except (SafetensorError, OSError) as err:
            raise OSError(
                f"{weights} is truncated or corrupt ({_first_line(err)}); copy it again"
            ) from None


# Which files hold a tokenizer: T5's SentencePiece model (spiece.model) or its fast version
# (tokenizer.json), plus the files other tokenizers of the family (ByT5) are made of.
TOKENIZER_FILE_PATTERNS = (
    "tokenizer*.json",
    "*.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
)
_SANITY_TEXT = "the cat sat on the mat"


def load_tokenizer(name_or_path: str | os.PathLike, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, refused in one line (ValueError / OSError) if it cannot be
    the one the model was trained with.

    ``AutoTokenizer`` does not fail on a directory without tokenizer files: it picks the class
    from ``config.json`` (``T5Tokenizer`` for model_type t5), and a ``T5Tokenizer`` without a
    vocabulary file builds a placeholder one (``<pad> </s> <unk> ▁`` + 100 sentinels), so every
    word becomes ``▁ <unk>`` and a run trains on nothing and scores 0 with exit code 0. Hence:
    a local directory must hold tokenizer files, the tokenizer must have an eos token, and it
    must map a plain English sentence to something other than ``<unk>``.
    """
    from transformers import AutoTokenizer

    name_or_path, revision = split_revision(name_or_path)
    local = Path(name_or_path).expanduser()
    cache_only = False
    if local.is_dir():
        if not any(next(local.glob(p), None) for p in TOKENIZER_FILE_PATTERNS):
            raise FileNotFoundError(
                f"{local} has no tokenizer files: a T5 tokenizer needs spiece.model or "
                "tokenizer.json (copy them from the checkpoint the weights came from)"
            )
        source = str(local)
    else:
        source, cache_only = str(name_or_path), load_from_cache_only(str(name_or_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            trust_remote_code=trust_remote_code,
            local_files_only=cache_only,
            **({"revision": revision} if revision else {}),
        )
    except Exception as err:  # tokenizers raises bare Exceptions for a corrupt tokenizer.json
        raise OSError(f"cannot load a tokenizer from {source!r}: {_first_line(err)}") from None
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"the tokenizer of {source} has no eos token; T5 targets end with </s>: "
            "check its tokenizer_config.json / special_tokens_map.json"
        )
    if tokenizer.pad_token_id is None:
        # GPT-2's and Pythia's tokenizers name no pad token; a causal LM's padding is masked
        # out (repro.causal), so its id is immaterial: eos, as Hugging Face's generate pads
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer(_SANITY_TEXT, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    words = [i for i, piece in zip(ids, pieces, strict=True) if piece.strip("▁Ġ ")]
    if not words or all(i == tokenizer.unk_token_id for i in words):
        raise ValueError(
            f"the tokenizer of {source} maps {_SANITY_TEXT!r} to <unk> only: its vocabulary is "
            "missing or wrong; a T5 tokenizer needs spiece.model or tokenizer.json"
        )
    return tokenizer


def _first_line(err: BaseException) -> str:
    """A library error in one line; a first line that ends in ":" keeps the line it announces."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(err).__name__


def fp32_logits(model: nn.Module) -> None:
    """Compute the LM head in fp32 under autocast (``trainer.precision=bf16``), as T5X computes
    its ``logits_dense`` in float32 "for stability" (activations bf16, parameters and logits
    fp32: PAPER.md). Outside autocast the head runs as it did: fp32 runs are unchanged."""
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear) and "forward" not in vars(head):  # once
        head.forward = types.MethodType(_head_forward, head)


def _head_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return nn.Linear.forward(self, x)
    with torch.autocast(device, enabled=False):
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.weight.float(), bias)


def fuse_gelu(module: nn.Module) -> int:
    """Swap transformers' ``NewGELUActivation`` (T5.1.1's gelu_new) for ``nn.GELU("tanh")``.

    The same function — 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) — to ~2e-7 in fp32, but one
    kernel that keeps only its input for backward, where gelu_new's Python formula runs ~7
    element-wise ops and keeps ~4 intermediates [B, T, d_ff] per layer: a train step needs ~13 %
    less activation memory and less time (benchmarks/README.md). Returns how many were swapped.
    """
    from transformers.activations import NewGELUActivation

    swapped = 0
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, nn.GELU(approximate="tanh"))
                swapped += 1
    return swapped


def set_dropout(module: nn.Module, rate: float) -> None:
    """Set every dropout of the backbone (paper silent; official fine-tuning configs use 0.1)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {rate}")
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = rate


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_backbone(backbone: nn.Module, directory: Path, tokenizer=None) -> None:
    """The backbone as a loadable checkpoint: config.json, model.safetensors (tied weights once),
    generation_config.json, and the tokenizer's files if given (``model.path=<dir>`` loads it)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar at every eval otherwise
    try:
        backbone.save_pretrained(directory, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def load_backbone_weights(backbone: nn.Module, directory: Path) -> None:
    """Copy ``directory/model.safetensors`` (written by :func:`save_backbone`) into
    ``backbone``, in place.

    Raises:
        ValueError: a tensor of another shape, or a weight the file lacks that is not tied to
            one it holds (the file comes from another model).
        OSError / safetensors errors: an unreadable file (the caller names it).
    """
    from safetensors.torch import load_file

    saved = load_file(str(directory / "model.safetensors"))
    own = backbone.state_dict()
    for key, tensor in saved.items():
        if key in own and own[key].shape != tensor.shape:
            raise ValueError(
                f"checkpoint {directory} holds {key} of shape {tuple(tensor.shape)}, but this "
                f"run's backbone has {tuple(own[key].shape)}"
            )
    unknown = sorted(set(saved) - set(own))
    if unknown:
        raise ValueError(f"checkpoint {directory} holds weights this backbone lacks: {unknown[:3]}")
    backbone.load_state_dict(saved, strict=False)
    # a weight the file does not hold must share its storage with one it holds (tied embeddings)
    loaded = {own[k].data_ptr() for k in saved}
    missing = [k for k in own if k not in saved and own[k].data_ptr() not in loaded]
    if missing:
        raise ValueError(f"checkpoint {directory} lacks weights of this backbone: {missing[:3]}")
