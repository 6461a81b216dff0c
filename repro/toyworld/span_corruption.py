"""T5's span-corruption objective (Raffel et al. 2020, §3.1.4), written from its description.

A segment of ``L`` tokens gets ``round(L * noise_density)`` noise tokens, grouped into
``round(noise / mean_noise_span_length)`` spans. The segment is cut into alternating non-noise
and noise spans (it starts with non-noise and ends with noise, as T5 does) whose lengths are a
uniformly random composition of the respective token counts. Each noise span is replaced in the
inputs by one sentinel; the targets are the sentinels each followed by the span it replaced.
Sentinels are ``<extra_id_0>``, ``<extra_id_1>``, … in order of appearance, whose ids *descend*
from the top of the vocabulary (``<extra_id_0>`` = ``vocab_size - 1``). Both sides end with eos.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _random_composition(rng: np.random.Generator, total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` positive integers, every composition equally likely."""
    cuts = sorted(rng.choice(np.arange(1, total), size=parts - 1, replace=False).tolist())
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def noise_spans(
    length: int,
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> list[tuple[int, int]]:
    """The noise spans of a segment of ``length`` tokens as sorted ``(start, end)`` pairs.

    Raises:
        ValueError: ``length`` < 2 (T5 needs one noise and one kept token).
    """
    if length < 2:
        raise ValueError(f"span corruption needs a segment of >= 2 tokens; got {length}")
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(min(round(n_noise / mean_noise_span_length), n_noise, length - n_noise), 1)
    noise_lengths = _random_composition(rng, n_noise, n_spans)
    keep_lengths = _random_composition(rng, length - n_noise, n_spans)
    spans, pos = [], 0
    for keep, noise in zip(keep_lengths, noise_lengths, strict=True):
        pos += keep
        spans.append((pos, pos + noise))
        pos += noise
    return spans


def span_corruption(
    tokens: Sequence[int],
    rng: np.random.Generator,
    *,
    vocab_size: int,
    eos_id: int = 1,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> tuple[list[int], list[int]]:
    """One span-corruption example from a segment of token ids (no eos in ``tokens``).

    Args:
        tokens: the segment [L].
        rng: decides where the spans fall.
        vocab_size: size of the tokenizer's vocabulary; sentinel k has id ``vocab_size - 1 - k``.

    Returns:
        ``(inputs, targets)``: ``inputs`` = the segment with each noise span replaced by its
        sentinel, then eos; ``targets`` = each sentinel followed by its span, then eos.
    """
    tokens = list(tokens)
    spans = noise_spans(len(tokens), rng, noise_density, mean_noise_span_length)
    inputs, targets, prev = [], [], 0
    for k, (start, end) in enumerate(spans):
        sentinel = vocab_size - 1 - k
        inputs += [*tokens[prev:start], sentinel]
        targets += [sentinel, *tokens[start:end]]
        prev = end
    inputs += tokens[prev:]
    return [*inputs, eos_id], [*targets, eos_id]


def uncorrupt(
    inputs: Sequence[int], targets: Sequence[int], vocab_size: int, n_sentinels: int = 100
) -> list[int]:
    """The original segment back from an example (eos dropped): the inverse of ``span_corruption``."""
    first = vocab_size - n_sentinels

    def pieces(ids: Sequence[int]) -> dict[int, list[int]]:
        out, current = {}, None
        for t in ids:
            if t >= first:
                current = out.setdefault(t, [])
            elif current is not None:
                current.append(t)
        return out

    fills = pieces([t for t in targets if t != 1])
    text = []
    for t in inputs:
        if t == 1:
            break
        text += fills.get(t, []) if t >= first else [t]
    return text
