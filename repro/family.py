"""A backbone's family and what differs with it: the prompted model and the encoding rule.

The family is the checkpoint's own (``repro.backbone.family_of``: ``is_encoder_decoder`` in its
config): ``"t5"`` puts the prompt in front of T5's encoder input (``repro.model.PromptedT5``,
``repro.data.encode``); ``"causal"`` in front of a decoder-only LM's input
(``repro.causal.PromptedCausalLM``, ``repro.causal.encode_causal``: ``[bos] input "\\n" |
target eos``). The trainer and evaluation read the rest from the model itself
(``padding_side``, ``generated_prefix``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from repro.backbone import CAUSAL, T5, family_of
from repro.causal import SEPARATOR, PromptedCausalLM, encode_causal
from repro.data import Encoded, encode
from repro.model import PromptedT5
from repro.prompts import SoftPrompt
from repro.tasks.base import Example

__all__ = ["CAUSAL", "T5", "encode_for", "family_of", "prompted_model"]


def prompted_model(
    backbone: nn.Module, prompt: SoftPrompt, *, z_loss: float = 0.0, positions: str = "peft"
) -> nn.Module:
    """``prompt`` in front of the frozen ``backbone``, by its family (``positions``: how a causal
    LM numbers its tokens, ``repro.causal.POSITIONS``; T5 has relative attention)."""
    if family_of(backbone.config) == CAUSAL:
        return PromptedCausalLM(backbone, prompt, z_loss=z_loss, positions=positions)
    return PromptedT5(backbone, prompt, z_loss=z_loss)


def encode_for(
    family: str,
    examples: Sequence[Example],
    tokenizer,
    max_input_length: int,
    max_target_length: int,
    separator: str = SEPARATOR,
) -> Encoded:
    """A task's examples as the family's model reads them (input limit, target limit incl. eos;
    ``separator``: the text between a causal LM's input and target, ``model.separator``)."""
    if family == CAUSAL:
        return encode_causal(examples, tokenizer, max_input_length, max_target_length, separator)
    return encode(examples, tokenizer, max_input_length, max_target_length)
