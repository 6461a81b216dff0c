"""The tuned models: a frozen T5 and what each method trains on it, behind one interface.

``PromptedT5`` prepends a trainable soft prompt to the encoder's input embeddings (never the
decoder's); ``TunedT5`` (model tuning) trains every weight, ``LoraT5`` low-rank adapters beside
the frozen ones. Each is a ``Seq2SeqTuning``: the loss (``token_loss``), greedy generation and
label ranking the trainer and evaluation need. The backbone they wrap is loaded by
``repro.backbone``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.lora import LoraAdapter
from repro.prompts import SoftPrompt, prepend_prompt


class Seq2SeqTuning(nn.Module):
    """What every tuning method's model gives the trainer and evaluation: the loss, greedy
    generation and label ranking of a T5 backbone, on the encoder inputs ``encoder_inputs``
    builds. Subclasses say what is trained (``trainable_parameters``) and how the input is
    embedded (the prompt in front, or the input alone)."""

    backbone: nn.Module
    z_loss: float
    saves = "prompt"  # what best/ and last/ hold: prompt | backbone | adapter (save_trained)

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

    saves = "backbone"

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


class LoraT5(LoraAdapter, Seq2SeqTuning):
    """LoRA (Hu et al. 2021) through peft: low-rank matrices A [r, in], B [out, r] beside each
    targeted linear layer of the frozen backbone (``W x + (alpha / r) · B A x``); only A and B
    train. ``best/`` and ``last/`` hold the adapter alone (peft's ``adapter_config.json`` +
    ``adapter_model.safetensors``, loadable with ``PeftModel.from_pretrained``).

    peft injects the layers into ``backbone`` in place; a backbone that already carries an
    adapter (the previous task of a job) has it removed first. peft's init: A random
    (Kaiming-uniform, drawn from ``seed``), B zero, so training starts at the backbone. The
    injection, the adapter's files and the trainable parameters are :class:`repro.lora.LoraAdapter`'s.
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
        super().__init__()
        self.backbone = self._inject(
            backbone,
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_modules=target_modules,
            task_type="SEQ_2_SEQ_LM",
            seed=seed,
        )
        self.z_loss = z_loss

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] ids → ([B, T, H] input embeddings, [B, T] mask)."""
        return self.backbone.get_input_embeddings()(input_ids), attention_mask


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
