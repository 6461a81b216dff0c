"""Prompt tuning of a frozen decoder-only LM (GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, ...).

``PromptedCausalLM`` gives the trainer and evaluation what ``repro.model.Seq2SeqTuning`` gives
them for T5 (the loss, greedy generation, label ranking) on a causal backbone:

- the trainable prompt ``P [p × d_model]`` goes in front of the input embeddings, the attention
  mask widens by ``p`` ones (as PEFT's ``PromptTuningConfig(task_type="CAUSAL_LM")`` does);
- one sequence per example: ``[P; input; target]``. The input comes left-padded (so that every
  input ends where generation starts), the target right-padded after it: a target token attends
  to the prompt, the input and the target tokens before it, never to padding;
- position ids, by ``positions``:

  - ``"peft"`` (the default, PEFT's): **none are passed**, so the backbone numbers the whole
    sequence ``0 … p+T+L-1``, the prompt and any left padding included (PEFT drops position ids
    for prompt tuning: ``PeftModel._adjust_prompt_learning_kwargs``). A left-padded input's first
    real token sits at position ``p + (number of pads)``, in training and generation alike, so
    an example's loss and output depend on how much padding its batch gave it;
  - ``"unpadded"``: each token is numbered by the real tokens before it (the prompt ``0 … p-1``,
    the input from ``p`` on, pads skipped), as Hugging Face's own ``generate`` numbers a
    left-padded batch: an example scores the same in any batch;
- the loss covers the target tokens only (eos included; ``-100`` marks target padding), the
  mean over them, as :func:`repro.model.token_loss` computes it for T5;
- a task's example becomes ``[bos] input separator | target eos`` by one rule,
  :func:`encode_causal`;
- greedy generation runs with the KV cache, one new token a step, each numbered by the same
  convention as in training; ``score_candidates`` sums each candidate's log-likelihood.

The other methods share that interface (``CausalTuning``): ``TunedCausalLM`` trains every
weight, ``LoraCausalLM`` LoRA beside the frozen ones (its layers by the architecture:
:mod:`repro.lora`); both put the input alone in front of the target.

Which family a checkpoint is comes from its config (``is_encoder_decoder``), never its name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# SEPARATOR: the text between a task's input and its target (encode_causal; model.separator);
# POSITIONS: how the tokens of [prompt; input; target] are numbered (PromptedCausalLM)
from repro.config import POSITIONS, SEPARATOR
from repro.data import Encoded
from repro.lora import LoraAdapter, causal_lora_modules
from repro.model import token_loss
from repro.prompts import SoftPrompt, prepend_prompt
from repro.tasks.base import Example

log = logging.getLogger(__name__)


def encode_causal(
    examples: Sequence[Example],
    tokenizer,
    max_input_length: int,
    max_target_length: int,
    separator: str = SEPARATOR,
) -> Encoded:
    """The one rule by which a task's text-to-text example (T5's, unchanged) becomes a causal
    LM's sequence ``[bos] input separator | target eos``:

    - the input ids: the tokenizer's bos if it adds one of its own accord (Llama's do, GPT-2's
      and Pythia's do not), the input's tokens, then the separator's (``"\\n"`` by default);
      an input too long for ``max_input_length`` loses its end, as T5's does, never the
      separator;
    - the target ids: the target's tokens, cut to ``max_target_length - 1``, then eos.

    Input, separator and target are tokenised each on its own, so a class's target ids are the
    same after every input (rank classification scores the same candidates) and the boundary
    between input and target is exact (a BPE merge across it cannot hide it). Collate with
    ``repro.data.collate(..., padding_side="left")``."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token: a causal target must end with one")
    sep = tokenizer(separator, add_special_tokens=False)["input_ids"] if separator else []
    if separator and not sep:
        # SentencePiece normalises "\n" away (T5's tokenizer, which the toy causal ladder
        # shares): the target then follows the input directly
        log.warning(
            "the separator %r is no token for this tokenizer: each target follows its input "
            "directly (docs/causal.md)",
            separator,
        )
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    head = [bos] if adds_bos else []
    room = max_input_length - len(head) - len(sep)
    if room < 1 or max_target_length < 2:
        raise ValueError(
            f"max_input_length {max_input_length} leaves no room for an input token beside "
            f"{len(head) + len(sep)} bos/separator token(s), or max_target_length "
            f"{max_target_length} < 2 (one token + eos)"
        )
    texts = [ex.inputs for ex in examples]
    inputs = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    targets = [ex.targets for ex in examples]
    labels = tokenizer(targets, add_special_tokens=False)["input_ids"] if targets else []
    return Encoded(
        input_ids=[[*head, *x[:room], *sep] for x in inputs],
        labels=[[*y[: max_target_length - 1], eos] for y in labels],
        n_truncated_inputs=sum(len(x) > room for x in inputs),
        n_truncated_targets=sum(len(y) > max_target_length - 1 for y in labels),
    )


def target_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Target texts as :func:`encode_causal` makes targets: their tokens, then eos (no bos):
    the candidates rank classification scores."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [[*x, tokenizer.eos_token_id] for x in ids]


def is_causal_lm(config) -> bool:
    """True for a decoder-only checkpoint (its config says ``is_encoder_decoder`` false)."""
    return not bool(getattr(config, "is_encoder_decoder", False))


class CausalTuning(nn.Module):
    """What every tuning method's model gives the trainer and evaluation on a frozen (or, for
    model tuning, trained) causal LM: the loss, greedy generation and label ranking over
    ``[prefix; input; target]``. Subclasses say what is trained (``trainable_parameters``) and
    what goes in front of the input (``_inputs``: a prompt, or nothing).

    ``padding_side`` and ``generated_prefix`` tell the trainer and evaluation how this family
    differs from T5's (``repro.model``: right padding, generation starting with the decoder's
    start token): inputs padded on the left, generation returning the new tokens only.
    ``saves``: what ``best/`` and ``last/`` hold (``repro.trainer.save_trained``)."""

    padding_side = "left"
    generated_prefix = 0
    saves = "prompt"
    backbone: nn.Module
    z_loss: float
    positions: str

    def _setup(self, backbone: nn.Module, z_loss: float, positions: str) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}; got {positions!r}")
        if not is_causal_lm(backbone.config):
            raise ValueError(
                f"{type(backbone).__name__} is an encoder-decoder model (is_encoder_decoder: "
                "true): tune it with repro.model (PromptedT5, TunedT5, LoraT5)"
            )
        self.backbone = backbone
        self.z_loss = z_loss
        self.positions = positions
        # what the backbone's forward takes, read once (not at every step of a generation)
        taken = inspect.signature(backbone.forward).parameters
        self._keeps_logits = "logits_to_keep" in taken  # transformers ≥ 4.50
        # the KV cache's name, in outputs and inputs alike: ``cache`` in transformers ≥ 5.2x
        # (``past_key_values`` deprecated there), ``past_key_values`` before
        self._cache_kwarg = "cache" if "cache" in taken else "past_key_values"

    @property
    def prefix_length(self) -> int:
        """Positions in front of the input (the prompt's length; 0 without a prompt)."""
        return 0

    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def _inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, prefix+T, H] embeddings, [B, prefix+T] mask)."""
        return self.backbone.get_input_embeddings()(input_ids), attention_mask

    def _position_ids(self, mask: Tensor) -> Tensor | None:
        """[B, S] positions of a [B, S] mask's tokens, or None (the backbone's own: PEFT's)."""
        if self.positions == "peft":
            return None
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def target_logits(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        """Logits predicting each target token: [B, L, V] in fp32 (row j predicts labels[:, j])."""
        targets = labels.clamp(min=0)  # padding (-100) is fed as token 0, masked out
        ids = torch.cat([input_ids, targets], dim=1)
        mask = torch.cat([attention_mask, (labels != -100).to(attention_mask.dtype)], dim=1)
        embeds, mask = self._inputs(ids, mask)
        width = labels.shape[1]
        # the LM head over the L+1 last positions only (the last input token's on): a 150K-row
        # vocabulary's logits at every prompt and input position would cost more than the rest
        keep = {"logits_to_keep": width + 1} if self._keeps_logits else {}
        logits = self.backbone(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=self._position_ids(mask),
            **keep,
        ).logits
        start = logits.shape[1] - width - 1  # the last input token's position
        return logits[:, start : start + width].float()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor):
        """Teacher-forced forward.

        Args:
            input_ids, attention_mask: [B, T] left-padded inputs (the separator included).
            labels: [B, L] target ids (eos included), padding marked -100.

        Returns:
            (loss: mean token cross-entropy over the targets (+ z-loss if set), logits
            [B, L, V] in fp32).
        """
        logits = self.target_logits(input_ids, attention_mask, labels)
        return token_loss(logits, labels, self.z_loss), logits

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
        pad_token_id: int = 0,
    ) -> Tensor:
        """Greedy decoding with the KV cache. Returns the new tokens only, [B, ≤max_new_tokens];
        a sequence that has produced eos is padded with ``pad_token_id`` after it. ``eos_token_id``
        defaults to the backbone config's; an id no token has (e.g. -1) never ends a sequence.
        (Not PEFT's ``generate``: with peft 0.21.2 and transformers 5.25 its cached steps leave
        the greedy continuation of its own forward, with 0.22.0 not; tests/test_causal.py
        records it.)"""
        eos = self.backbone.config.eos_token_id if eos_token_id is None else eos_token_id
        embeds, mask = self._inputs(input_ids, attention_mask)
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=self._position_ids(mask),
            use_cache=True,
        )
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        new: list[Tensor] = []
        for step in range(max_new_tokens):
            token = out.logits[:, -1].argmax(-1)
            token = torch.where(done, torch.full_like(token, pad_token_id), token)
            new.append(token)
            if eos is not None:
                done = done | (token == eos)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            positions = self._position_ids(mask)
            out = self.backbone(
                inputs_embeds=self.backbone.get_input_embeddings()(token[:, None]),
                attention_mask=mask,
                position_ids=None if positions is None else positions[:, -1:],
                use_cache=True,
                **{self._cache_kwarg: getattr(out, self._cache_kwarg)},
            )
        if not new:
            return input_ids.new_zeros(len(input_ids), 0)
        return torch.stack(new, dim=1)

    @torch.no_grad()
    def score_candidates(
        self, input_ids: Tensor, attention_mask: Tensor, candidates: Sequence[Sequence[int]]
    ) -> Tensor:
        """Log-likelihood of each candidate target (ids incl. eos) for every input: [B, C]."""
        scores = []
        for ids in candidates:
            labels = torch.as_tensor(list(ids), device=input_ids.device).expand(len(input_ids), -1)
            logprobs = self.target_logits(input_ids, attention_mask, labels).log_softmax(-1)
            scores.append(logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1))
        return torch.stack(scores, dim=1)


class PromptedCausalLM(CausalTuning):
    """Frozen causal LM + trainable ``SoftPrompt`` in front of the input embeddings.

    Only ``self.prompt`` is trainable; the backbone stays frozen even in ``train()`` mode."""

    def __init__(
        self,
        backbone: nn.Module,
        prompt: SoftPrompt,
        z_loss: float = 0.0,
        positions: str = "peft",
    ):
        super().__init__()
        self._setup(backbone, z_loss, positions)
        width = backbone.get_input_embeddings().embedding_dim
        if prompt.width != width:
            raise ValueError(
                f"prompt shape {(prompt.length, prompt.width)} does not fit this backbone: "
                f"its embedding width is {width}"
            )
        self.prompt = prompt
        backbone.requires_grad_(False)

    @property
    def prefix_length(self) -> int:
        return self.prompt.length

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.prompt.weight]

    def _inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, p+T, H] embeddings with the prompt in front, [B, p+T] mask)."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return prepend_prompt(self.prompt(), embeds, attention_mask)


class TunedCausalLM(CausalTuning):
    """Model tuning of a causal LM: every weight trains, the input goes in alone (``[input;
    target]``, as :func:`encode_causal` builds it). ``best/`` and ``last/`` hold the whole
    backbone, as :class:`repro.model.TunedT5`'s do."""

    saves = "backbone"

    def __init__(self, backbone: nn.Module, z_loss: float = 0.0, positions: str = "peft"):
        super().__init__()
        self._setup(backbone, z_loss, positions)
        backbone.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]


class LoraCausalLM(LoraAdapter, CausalTuning):
    """LoRA on a frozen causal LM (peft, ``task_type="CAUSAL_LM"``): A [r, in], B [out, r]
    beside each layer ``target_modules`` names, the input alone in front of the target
    (``[input; target]``, as :class:`TunedCausalLM`'s). ``target_modules`` are T5's roles
    (``q``, ``v``, ``wi_0``, ...), mapped onto this architecture's modules by its
    ``model_type`` (:func:`repro.lora.causal_lora_modules`: GPT-NeoX's fused
    ``query_key_value`` once for any of q, k, v). A drawn from ``seed``, B zero; ``best/`` and
    ``last/`` hold the adapter alone, as :class:`repro.model.LoraT5`'s do.

    Raises:
        ValueError: an architecture or a role the mapping does not know (one line).
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
        positions: str = "peft",
    ):
        super().__init__()
        self._setup(backbone, z_loss, positions)  # a T5 refused before anything changes
        modules = causal_lora_modules(backbone.config.model_type, target_modules)
        self.backbone = self._inject(
            backbone,
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_modules=modules,
            task_type="CAUSAL_LM",
            seed=seed,
        )


class MultiPromptCausalLM(CausalTuning):
    """A frozen causal LM with N prompts: row r of a batch is read behind prompt ``r mod N``
    (``repro.ensemble``'s one batched pass; callers repeat each example N times with
    ``repeat_interleave``), as :class:`repro.ensemble.MultiPromptT5` does for T5. Nothing here
    is trainable."""

    def __init__(self, backbone: nn.Module, prompts: Tensor, positions: str = "peft"):
        super().__init__()
        self._setup(backbone, 0.0, positions)
        width = backbone.get_input_embeddings().embedding_dim
        if prompts.dim() != 3 or prompts.shape[-1] != width:
            raise ValueError(
                f"prompts of shape {tuple(prompts.shape)} do not fit this backbone: "
                f"expected [N, P, {width}]"
            )
        backbone.requires_grad_(False)
        self.register_buffer("prompts", prompts.detach().to(torch.float32).clone())

    @property
    def n_prompts(self) -> int:
        return self.prompts.shape[0]

    @property
    def prefix_length(self) -> int:
        return self.prompts.shape[1]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    def _inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B·N, T] ids → ([B·N, P+T, H], [B·N, P+T]): prompt ``r mod N`` in front of row r."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        rows, (n, p, _) = embeds.shape[0], self.prompts.shape
        if rows % n:
            raise ValueError(f"{rows} rows are not a whole number of copies of {n} prompts")
        prefix = self.prompts.to(embeds.dtype).repeat(rows // n, 1, 1)
        ones = attention_mask.new_ones(rows, p)
        return torch.cat([prefix, embeds], dim=1), torch.cat([ones, attention_mask], dim=1)
