"""What a toy checkpoint knows before any prompt tuning: a zero-shot probe of the two skills the
toy tasks ask for.

A prompt can only draw out what the frozen model already knows, so the build measures it
directly, without a prompt: for each probe item the model scores the two label words as the
continuation of a text in the corpus's own form, and the item counts as right when the true
label is the more likely one (chance = 50 %).

- ``review``: ``<a toy_review sentence> this review is`` → ``negative`` / ``positive``, with
  all 10 adjectives of each polarity;
- ``fact``: ``<passage> <question>`` → ``no`` / ``yes``, the toy_fact task's own generator;

each after a few other documents of the world, as in pre-training.

A span-corruption checkpoint is asked in its pre-training form (the label replaced by a
sentinel, target ``<extra_id_0> label``); an LM-adapted one as a prefix LM (input
the text, target ``label .``).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from repro.toyworld import world
from repro.toyworld.span_corruption import span_corruption

PROBE_ITEMS = 200  # per skill; a fixed, seeded set separate from the tasks' splits
CONTEXT_DOCS = 3  # corpus documents before each item (~60-90 tokens)


def probe_items(n: int = PROBE_ITEMS) -> dict[str, list[tuple[str, str, int]]]:
    """``{skill: [(context, text, label), ...]}``: texts whose continuation is the label word.

    Each text follows a few other documents of the world (``context``), as every span the
    models were trained on sat inside a 128-token stretch of concatenated documents: an item
    alone is a far shorter input than any they saw.
    """
    rng = random.Random("toyworld-probe")
    docs = world.documents(2 * n * CONTEXT_DOCS, seed=-1)  # a seed neither corpus uses

    def context() -> str:
        return " ".join(next(docs) for _ in range(CONTEXT_DOCS))

    review = []
    for i in range(n):
        label = i % 2
        review.append((context(), f"{world.review_sentence(rng, label)} this review is", label))
    fact = []
    for _ in range(n):
        passage, question, label = world.fact_example(rng)
        fact.append((context(), f"{passage} {question}", label))
    return {"review": review, "fact": fact}


LABEL_WORDS = {"review": world.REVIEW_LABELS, "fact": world.FACT_LABELS}
RARE_ADJECTIVES = frozenset(
    world.POSITIVE_WORDS[world.SEEN_ADJECTIVES :] + world.NEGATIVE_WORDS[world.SEEN_ADJECTIVES :]
)


def _rare_adjective(text: str) -> bool:
    return not RARE_ADJECTIVES.isdisjoint(text.split())


@torch.no_grad()
def probe(model, tokenizer, style: str, n: int = PROBE_ITEMS) -> dict[str, float]:
    """Zero-shot accuracy (%) per skill; ``style`` is ``"span_corruption"`` or ``"prefix_lm"``."""
    if style not in ("span_corruption", "prefix_lm"):
        raise ValueError(f"style={style!r}; allowed: span_corruption, prefix_lm")
    was_training = model.training
    model.eval()
    s0 = "<extra_id_0>"
    device = next(model.parameters()).device
    scores = {}
    for skill, items in probe_items(n).items():
        words = LABEL_WORDS[skill]
        if style == "span_corruption":  # the label masked; target "<extra_id_0> label" + eos
            inputs = [f"{ctx} {text} {s0} ." for ctx, text, _ in items]
            targets = [f"{s0} {w}" for _ in items for w in words]
        else:
            inputs = [f"{ctx} {text}" for ctx, text, _ in items]
            targets = [f"{w} ." for _ in items for w in words]
        labels = torch.tensor([label for _, _, label in items])
        enc = tokenizer(inputs, return_tensors="pt", padding=True).to(device)
        tgt = tokenizer(targets, return_tensors="pt", padding=True).input_ids.to(device)
        tgt[tgt == tokenizer.pad_token_id] = -100
        # encode each item once, decode both label words from it
        hidden = model.get_encoder()(**enc).last_hidden_state.repeat_interleave(len(words), 0)
        logits = model(
            encoder_outputs=(hidden,),
            attention_mask=enc.attention_mask.repeat_interleave(len(words), 0),
            labels=tgt,
        ).logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none").sum(1)
        # [items, 2]: the label with the lower negative log-likelihood is the model's answer
        answer = nll.view(len(items), len(words)).argmin(1).cpu()
        right = (answer == labels).float()
        scores[skill] = round(100.0 * float(right.mean()), 1)
        if skill == "review":
            # the items of the 3 rarest adjectives of each lexicon (toy_review never trains on
            # them); they are not balanced, so the mean of the two classes' accuracies: a
            # constant answer scores 50
            rare = torch.tensor([_rare_adjective(text) for _, text, _ in items])
            per_class = [right[rare & (labels == c)].mean() for c in (0, 1)]
            scores["review_rare"] = round(100.0 * float(sum(per_class) / 2), 1)
    model.train(was_training)
    return scores


def first_pieces(tokenizer, words) -> tuple[int, ...]:
    """The first piece of each word as the tokenizer writes it in running text."""
    return tuple(tokenizer(f" {w}", add_special_tokens=False).input_ids[0] for w in words)


@torch.no_grad()
def masked_label_hits(
    model, tokenizer, segments, pairs: dict[str, tuple[int, int]], rng
) -> tuple[dict[str, int], dict[str, int]]:
    """Span-corrupt each segment (numpy ``rng``) and, at every target position whose true token
    is one of a skill's two label pieces, count the model right when it ranks that piece above
    the other, teacher-forced as in pre-training. Returns ``(right, seen)`` per skill."""
    right = {skill: 0 for skill in pairs}
    seen = {skill: 0 for skill in pairs}
    device = next(model.parameters()).device
    for segment in segments:
        x, y = span_corruption(
            segment, rng, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id
        )
        logits = model(
            input_ids=torch.tensor([x], device=device), labels=torch.tensor([y], device=device)
        ).logits[0]
        for pos, token in enumerate(y):
            for skill, (a, b) in pairs.items():
                if token in (a, b):
                    other = b if token == a else a
                    right[skill] += int(logits[pos, token] > logits[pos, other])
                    seen[skill] += 1
    return right, seen


@torch.no_grad()
def in_corpus(
    model, tokenizer, n_segments: int = 200, segment_length: int = 128
) -> dict[str, float]:
    """Accuracy (%) on the label words where span corruption masked them in unseen corpus text.

    Span-corrupts ``n_segments`` segments of fresh documents of the world (seeded) and, at every
    target position whose true token is a label word, counts the model right when it ranks that
    word above the other label word of its skill, teacher-forced as in pre-training. Set beside
    ``probe``, it separates "has not learned the skill" from "uses it only in the pre-training
    form".
    """
    import numpy as np

    was_training = model.training
    model.eval()
    docs = list(world.documents(40 * n_segments // 10 + 100, seed=-2))
    stream = [t for ids in tokenizer(docs, add_special_tokens=False)["input_ids"] for t in ids]
    pairs = {skill: first_pieces(tokenizer, words) for skill, words in LABEL_WORDS.items()}
    for skill, (a, b) in pairs.items():
        if a == b:
            raise ValueError(f"the {skill} label words {LABEL_WORDS[skill]} start with one piece")
    segments = [
        stream[i * segment_length : (i + 1) * segment_length]
        for i in range(min(n_segments, len(stream) // segment_length))
    ]
    right, seen = masked_label_hits(model, tokenizer, segments, pairs, np.random.default_rng(0))
    model.train(was_training)
    return {s: round(100.0 * right[s] / seen[s], 1) if seen[s] else float("nan") for s in pairs}
