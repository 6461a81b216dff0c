"""How fast does a toy model learn adjective polarity from span corruption, next to learning it
from labelled examples? ``python -m repro.toyworld efficiency`` (docs/toy_world.md).

Both arms train the same T5.1.1-shaped model from random init with T5's pre-training Adafactor,
batch 32, seed 0, and each is scored, in the form it trains on, on whether the true label word
outranks the other one (chance 50):

- ``span_corruption``: span corruption (15 % noise, mean span 3) on 128-token segments of
  concatenated *review pages*: a label word, 3-6 review sentences whose adjectives all have that
  polarity, and a verdict. Every page answers its own polarity several times, so the skill is
  as learnable from this text as text makes it. Scored on 200 held-out segments wherever span
  corruption masked a label word, teacher-forced as in pre-training.
- ``supervised``: ``<review sentence> this review is`` → ``negative`` / ``positive``, the
  same knowledge as labelled examples; the loss is on the label word only. Scored on 200
  held-out sentences.

Measured (docs/toy_world.md): the supervised arm is at 100 % from step 100, the span-corruption
arm near chance through step 600. The label words are ~3 % of its targets, the likeliest reason.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from repro.toyworld import world
from repro.toyworld.build import IGNORE_INDEX, SIZES, _pad, t5_config
from repro.toyworld.probe import first_pieces, masked_label_hits
from repro.toyworld.span_corruption import span_corruption

SEGMENT = 128
BATCH = 32


def review_page(rng: random.Random) -> str:
    """A page of one polarity: label word, 3-6 review sentences, verdict."""
    label = rng.randrange(2)
    polarity = world.REVIEW_LABELS[label]
    sentences = " ".join(world.review_sentence(rng, label) for _ in range(rng.randint(3, 6)))
    return f"{polarity} : {sentences} overall a {polarity} review ."


def _segments(tokenizer, n_pages: int, seed: int) -> np.ndarray:
    rng = random.Random(f"efficiency-{seed}")
    pages = [review_page(rng) for _ in range(n_pages)]
    stream = [t for ids in tokenizer(pages, add_special_tokens=False)["input_ids"] for t in ids]
    n = len(stream) // SEGMENT
    return np.asarray(stream[: n * SEGMENT]).reshape(n, SEGMENT)


def masked_label_accuracy(model, tokenizer, held: np.ndarray) -> float:
    """% of masked label words in ``held`` that the model ranks above the other label word."""
    pairs = {"review": first_pieces(tokenizer, ("positive", "negative"))}
    model.eval()
    right, seen = masked_label_hits(
        model, tokenizer, [s.tolist() for s in held], pairs, np.random.default_rng(1)
    )
    model.train()
    return 100.0 * right["review"] / max(seen["review"], 1)


@torch.no_grad()
def supervised_accuracy(model, tokenizer, n: int = 200) -> float:
    """% of held-out review sentences whose true label word the model ranks first."""
    rng = random.Random("efficiency-held")
    labels = [i % 2 for i in range(n)]
    x = tokenizer(
        [f"{world.review_sentence(rng, k)} this review is" for k in labels],
        return_tensors="pt",
        padding=True,
    )
    first = list(first_pieces(tokenizer, world.REVIEW_LABELS))
    start = torch.full((n, 1), model.config.decoder_start_token_id)
    model.eval()
    logits = model(**x, decoder_input_ids=start).logits[:, 0, first]
    model.train()
    return 100.0 * float((logits.argmax(1) == torch.tensor(labels)).float().mean())


def _batches(arm: str, tokenizer, segments: np.ndarray, seed: int) -> Iterator[tuple]:
    rng = np.random.default_rng(seed)
    text_rng = random.Random(f"efficiency-supervised-{seed}")
    while True:
        if arm == "span_corruption":
            xs, ys = [], []
            for i in rng.integers(0, len(segments), BATCH):
                x, y = span_corruption(
                    segments[i].tolist(), rng, vocab_size=len(tokenizer), eos_id=1
                )
                xs.append(x)
                ys.append(y)
            yield _pad(xs, tokenizer.pad_token_id), _pad(ys, IGNORE_INDEX)
        else:
            labels = [text_rng.randrange(2) for _ in range(BATCH)]
            texts = [f"{world.review_sentence(text_rng, k)} this review is" for k in labels]
            targets = [world.REVIEW_LABELS[k] for k in labels]
            x = tokenizer(texts, return_tensors="pt", padding=True).input_ids
            y = tokenizer(targets, return_tensors="pt", padding=True).input_ids
            y[y == tokenizer.pad_token_id] = IGNORE_INDEX
            yield x, y


def run(
    tokenizer_path: str,
    size: str = "toy_small",
    steps: int = 600,
    every: int = 100,
    seed: int = 0,
    pages: int = 30_000,
) -> list[dict]:
    """Train both arms side by side; returns one row per ``every`` steps."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    from transformers.optimization import Adafactor

    if size not in SIZES:
        raise ValueError(f"unknown toy size {size!r}; allowed: {', '.join(SIZES)}")
    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1; got steps={steps}, every={every}")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    segments = _segments(tokenizer, pages, seed)
    held, train = segments[-200:], segments[:-200]
    arms = {}
    for arm in ("span_corruption", "supervised"):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(t5_config(SIZES[size], len(tokenizer)))
        optimizer = Adafactor(
            model.parameters(), lr=None, scale_parameter=True, relative_step=True, warmup_init=False
        )
        arms[arm] = (model, optimizer, _batches(arm, tokenizer, train, seed))
    rows, start = [], time.time()
    for step in range(1, steps + 1):
        for model, optimizer, batches in arms.values():
            x, y = next(batches)
            logits = model(
                input_ids=x, attention_mask=(x != tokenizer.pad_token_id).long(), labels=y
            ).logits
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if step % every == 0 or step == steps:
            row = {"step": step, "seconds": round(time.time() - start, 1)}
            row["span_corruption"] = round(
                masked_label_accuracy(arms["span_corruption"][0], tokenizer, held), 1
            )
            row["supervised"] = round(supervised_accuracy(arms["supervised"][0], tokenizer), 1)
            rows.append(row)
            print(row, flush=True)
    return rows
