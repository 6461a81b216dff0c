"""A frozen T5 whose encoder sees a trainable soft prompt in front of its input.

``load_backbone`` loads any T5-family seq2seq checkpoint (hub id or local directory) and freezes
it; ``PromptedT5`` prepends the prompt to the encoder's input embeddings (never the decoder's)
and exposes the loss, greedy generation and label ranking the trainer and evaluation need.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.hub import load_from_cache_only
from repro.prompts import SoftPrompt, prepend_prompt

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def checkpoint_config(name_or_path: str | os.PathLike, trust_remote_code: bool = False):
    """Check a checkpoint without reading its weights: ``(config, source, cache_only)``.

    A local directory must exist and hold a readable ``config.json`` and intact safetensors
    headers (:func:`check_checkpoint_files`); a hub id must be reachable or cached
    (``repro.hub``); the model must be a T5-family encoder-decoder. Each failure is one line.
    """
    from transformers import AutoConfig

    local = Path(name_or_path).expanduser()
    if str(name_or_path).startswith((".", "/", "~")) and not local.is_dir():
        raise FileNotFoundError(f"checkpoint directory {name_or_path} does not exist")
    if local.is_dir():
        source, cache_only = str(local), False
        check_checkpoint_files(local)
    else:  # a hub id: fail in seconds, not after minutes of retries, when the hub is away
        source, cache_only = str(name_or_path), load_from_cache_only(str(name_or_path))
    try:
        config = AutoConfig.from_pretrained(
            source, trust_remote_code=trust_remote_code, local_files_only=cache_only
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" and not local.is_dir()
        hint = " (HF_HUB_OFFLINE=1 is set: pass a local directory instead)" if offline else ""
        raise OSError(f"cannot load a checkpoint from {name_or_path!r}{hint}: {err}") from None
    except Exception as err:  # a config.json transformers cannot read (unknown type, bad field)
        if not local.is_dir():
            raise
        raise ValueError(f"cannot use {local / 'config.json'}: {_first_line(err)}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{name_or_path} holds a {config.model_type!r} model; prompt tuning here needs a "
            "T5-family encoder-decoder (t5, mt5, umt5, ...)"
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
    """Load a T5-family encoder-decoder, frozen: every parameter has ``requires_grad=False``.

    Args:
        name_or_path: a hub id (``google/t5-base-lm-adapt``) or a local directory.
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
    from transformers import AutoModelForSeq2SeqLM

    config, source, cache_only = checkpoint_config(name_or_path, trust_remote_code)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if cache_only:
        kwargs["local_files_only"] = True
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs)
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
    model.requires_grad_(False)
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
            source, trust_remote_code=trust_remote_code, local_files_only=cache_only
        )
    except Exception as err:  # tokenizers raises bare Exceptions for a corrupt tokenizer.json
        raise OSError(f"cannot load a tokenizer from {source!r}: {_first_line(err)}") from None
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"the tokenizer of {source} has no eos token; T5 targets end with </s>: "
            "check its tokenizer_config.json / special_tokens_map.json"
        )
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


class Seq2SeqTuning(nn.Module):
    """What every tuning method's model gives the trainer and evaluation: the loss, greedy
    generation and label ranking of a T5 backbone, on the encoder inputs ``encoder_inputs``
    builds. Subclasses say what is trained (``trainable_parameters``) and how the input is
    embedded (the prompt in front, or the input alone)."""

    backbone: nn.Module
    z_loss: float

    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def encode(self, input_ids: Tensor, attention_mask: Tensor):
        """Run the encoder on [prompt; input]; returns (encoder outputs, [B, P+T] mask)."""
        embeds, mask = self.encoder_inputs(input_ids, attention_mask)
        encoder_outputs = self.backbone.get_encoder()(
            inputs_embeds=embeds, attention_mask=mask, return_dict=True
        )
        return encoder_outputs, mask

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor):
        """Teacher-forced forward.

        Args:
            input_ids, attention_mask: [B, T] right-padded inputs.
            labels: [B, L] target ids, padding marked -100.

        Returns:
            (loss: mean token cross-entropy (+ z-loss if set), logits [B, L, V] in fp32).
        """
        embeds, mask = self.encoder_inputs(input_ids, attention_mask)
        # Decoder inputs from the labels, without letting the backbone compute its own loss.
        decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        out = self.backbone(
            inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_input_ids
        )
        logits = out.logits.float()
        loss = token_loss(logits, labels, self.z_loss)
        return loss, logits

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy decoding (the paper's). Returns [B, ≤max_new_tokens+1] ids, decoder start first."""
        embeds, mask = self.encoder_inputs(input_ids, attention_mask)
        return self.backbone.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
        )

    @torch.no_grad()
    def score_candidates(
        self, input_ids: Tensor, attention_mask: Tensor, candidates: Sequence[Sequence[int]]
    ) -> Tensor:
        """Log-likelihood of each candidate target (ids incl. eos) for every input: [B, C].

        The encoder runs once per batch; the decoder once per candidate.
        """
        encoder_outputs, mask = self.encode(input_ids, attention_mask)
        scores = []
        for ids in candidates:
            labels = torch.as_tensor(list(ids), device=input_ids.device).expand(len(input_ids), -1)
            out = self.backbone(
                encoder_outputs=encoder_outputs,
                attention_mask=mask,
                decoder_input_ids=self.backbone.prepare_decoder_input_ids_from_labels(
                    labels=labels
                ),
            )
            logprobs = out.logits.float().log_softmax(-1)
            scores.append(logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1))
        return torch.stack(scores, dim=1)


class PromptedT5(Seq2SeqTuning):
    """Frozen T5 backbone + trainable ``SoftPrompt`` prepended to the encoder input.

    Only ``self.prompt`` is trainable; the backbone stays frozen even in ``train()`` mode
    (where only its dropout switches on).
    """

    def __init__(self, backbone: nn.Module, prompt: SoftPrompt, z_loss: float = 0.0):
        super().__init__()
        width = backbone.get_input_embeddings().embedding_dim
        if prompt.width != width:
            raise ValueError(
                f"prompt shape {(prompt.length, prompt.width)} does not fit this backbone: "
                f"d_model is {width}"
            )
        self.backbone = backbone
        self.prompt = prompt
        self.z_loss = z_loss
        backbone.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.prompt.weight]

    # -- encoder side: the only place the prompt enters -----------------------------------
    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, P+T, H] embeddings with the prompt in front, [B, P+T] mask)."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return prepend_prompt(self.prompt(), embeds, attention_mask)


class TunedT5(Seq2SeqTuning):
    """Model tuning: every weight of the T5 backbone is trained; the encoder sees the input
    alone. ``best/`` and ``last/`` hold the whole backbone (``save_trained``), a full copy per
    task: the storage cost Figure 2 of the paper is about."""

    def __init__(self, backbone: nn.Module, z_loss: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.z_loss = z_loss
        backbone.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, T, H] input embeddings, [B, T] mask)."""
        return self.backbone.get_input_embeddings()(input_ids), attention_mask


def without_lora(backbone: nn.Module) -> nn.Module:
    """``backbone`` with the LoRA layers a :class:`LoraT5` injected into it removed (in place;
    peft's ``unload``: the original linear layers, their weights untouched), so a backbone
    shared by several runs (``repro.transfer``'s cache, the next task of a job) never scores
    another run with an earlier run's adapter inside. A plain backbone is returned as it is."""
    previous = getattr(backbone, "_repro_lora", None)
    if previous is None:
        return backbone
    plain = previous.unload()
    plain.__dict__["_repro_lora"] = None
    return plain


class LoraT5(Seq2SeqTuning):
    """LoRA (Hu et al. 2021) through peft: low-rank matrices A [r, in], B [out, r] beside each
    targeted linear layer of the frozen backbone (``W x + (alpha / r) · B A x``); only A and B
    train. ``best/`` and ``last/`` hold the adapter alone (peft's ``adapter_config.json`` +
    ``adapter_model.safetensors``, loadable with ``PeftModel.from_pretrained``).

    peft injects the layers into ``backbone`` in place; a backbone that already carries an
    adapter of this class (the previous task of a job) has it removed first. peft's init:
    A random (Kaiming-uniform, drawn from ``seed``), B zero, so training starts at the backbone.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: Sequence[str] = ("q", "v"),
        z_loss: float = 0.0,
        seed: int = 0,
    ):
        from peft import LoraConfig, get_peft_model

        super().__init__()
        backbone = without_lora(backbone)  # the last task's adapter: back to the plain backbone
        backbone.requires_grad_(False)
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(target_modules),
            task_type="SEQ_2_SEQ_LM",
        )
        with torch.random.fork_rng(devices=[]):  # A's random init from the run's seed alone
            torch.manual_seed(seed)
            peft_model = get_peft_model(backbone, config)
        self.backbone = peft_model.get_base_model()  # the T5 itself, LoRA layers inside
        object.__setattr__(self, "peft", peft_model)  # not a submodule: saves the adapter
        self.backbone.__dict__["_repro_lora"] = peft_model  # a plain attribute: no module cycle
        self.z_loss = z_loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.named_parameters() if "lora_" in n]

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, T, H] input embeddings, [B, T] mask)."""
        return self.backbone.get_input_embeddings()(input_ids), attention_mask

    def save_adapter(self, directory: Path) -> None:
        """``adapter_config.json`` + ``adapter_model.safetensors`` (the LoRA weights only)."""
        self.peft.save_pretrained(directory, safe_serialization=True)

    def load_adapter(self, directory: Path) -> None:
        """Copy the LoRA weights of ``directory/adapter_model.safetensors`` into this model.

        Raises:
            ValueError: a tensor of another shape (another rank or backbone) or a missing one.
            OSError / safetensors errors: an unreadable file (the caller names it).
        """
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        saved = load_file(str(directory / "adapter_model.safetensors"))
        own = {k: v for k, v in self.peft.state_dict().items() if "lora_" in k}
        own = {k.replace(".default", ""): v for k, v in own.items()}
        if set(saved) != set(own):
            raise ValueError(
                f"checkpoint {directory} holds LoRA weights of other layers than this run's "
                f"(method.target_modules): e.g. {sorted(set(saved) ^ set(own))[:2]}"
            )
        for key, tensor in saved.items():
            if own[key].shape != tensor.shape:
                raise ValueError(
                    f"checkpoint {directory} holds {key} of shape {tuple(tensor.shape)}, but "
                    f"this run builds {tuple(own[key].shape)} (another method.r?)"
                )
        set_peft_model_state_dict(self.peft, saved)


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


def token_loss(logits: Tensor, labels: Tensor, z_loss: float = 0.0) -> Tensor:
    """Mean cross-entropy over non-padding target tokens; optional z-loss (official: 1e-4).

    z-loss = z · mean(logsumexp(logits)²) over the same tokens, as in T5X/Mesh TF.
    """
    vocab = logits.shape[-1]
    flat_logits, flat_labels = logits.reshape(-1, vocab), labels.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
    if z_loss:
        keep = flat_labels != -100
        loss = loss + z_loss * flat_logits[keep].logsumexp(-1).pow(2).mean()
    return loss
