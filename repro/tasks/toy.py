"""Toy tasks the suite generates itself, in the same text-to-text form as SuperGLUE.

They exist so the whole pipeline (local data loading, formatting, training, scoring) runs
offline on a CPU. ``write_toy_data`` writes seeded ``train.jsonl`` / ``validation.jsonl`` files
in the same hub-like schema the real tasks read, and the tasks are registered like the real
ones; a smoke run points ``task.data_dir`` at the generated directory.

- ``toy_keyword``: filler words with one of the label words ``negative`` / ``positive`` among
  them; the target is that word. A prompt on a *random* frozen T5 can learn to find it, so the
  smoke run (tiny random model) has something to learn.
- ``toy_polarity``: one sentence holding exactly one polar word among neutral filler words;
  target ``positive`` / ``negative`` (SST-2-like, single input).
- ``toy_overlap``: ``hypothesis: … premise: …``; ``entailment`` if every hypothesis word
  occurs in the premise, else ``not_entailment`` (RTE-like, pair input).

Two more belong to the toy world (``repro.toyworld``, docs/toy_world.md), whose shipped
checkpoints were pre-trained on text that uses their label words:

- ``toy_review``: ``sentence: <a one-sentence review>`` → ``negative`` / ``positive``
  (SST-2-like); 3 of the 10 adjectives per class in its dev split never occur in its train split.
- ``toy_fact``: ``passage: <2-3 facts> question: <yes/no question>`` → ``no`` / ``yes``
  (BoolQ-like, pair input, keys in alphabetical order as in T5).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro.tasks.base import Example, Task, classification_metric, label_id
from repro.toyworld import world

POSITIVE = ("good", "great", "happy", "fine")
NEGATIVE = ("bad", "awful", "sad", "poor")
FILLER = tuple(
    [
        "the",
        "a",
        "cat",
        "dog",
        "bird",
        "man",
        "woman",
        "child",
        "house",
        "tree",
        "car",
        "road",
        "river",
        "city",
        "book",
        "door",
        "window",
        "sat",
        "ran",
        "saw",
        "said",
        "made",
        "took",
        "gave",
        "went",
        "came",
        "found",
    ]
)
SIZES = {"train": 512, "validation": 128}
# The toy world's tasks: more dev examples, so a 3-seed mean is not dominated by dev noise.
WORLD_SIZES = {"train": 1000, "validation": 200}


def _polarity_record(rng: random.Random, idx: int) -> dict[str, Any]:
    label = rng.randrange(2)
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return {"sentence": " ".join(words), "label": label, "idx": idx}


def _keyword_record(rng: random.Random, idx: int) -> dict[str, Any]:
    label = rng.randrange(2)
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
    words.insert(rng.randrange(len(words) + 1), ("negative", "positive")[label])
    return {"sentence": " ".join(words), "label": label, "idx": idx}


def _overlap_record(rng: random.Random, idx: int) -> dict[str, Any]:
    premise = [rng.choice(FILLER) for _ in range(rng.randint(5, 10))]
    label = rng.randrange(2)  # 0 = entailment, as in RTE
    hypothesis = rng.sample(premise, k=min(3, len(premise)))
    if label == 1:
        outside = [w for w in FILLER if w not in premise]
        hypothesis[rng.randrange(len(hypothesis))] = rng.choice(outside)
    return {
        "premise": " ".join(premise),
        "hypothesis": " ".join(hypothesis),
        "label": label,
        "idx": idx,
    }


GENERATORS = {
    "toy_keyword": _keyword_record,
    "toy_polarity": _polarity_record,
    "toy_overlap": _overlap_record,
    # split-aware: (rng, idx, split)
    "toy_review": world.review_record,
    "toy_fact": world.fact_record,
}
_SPLIT_AWARE = ("toy_review", "toy_fact")


def write_toy_data(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write ``train.jsonl`` and ``validation.jsonl`` for toy task ``name`` (seeded)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown toy task {name!r}; allowed: {', '.join(GENERATORS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = WORLD_SIZES if name in _SPLIT_AWARE else SIZES
    for offset, (split, size) in enumerate(sizes.items()):
        rng = random.Random(f"{name}-{seed}-{offset}")
        if name in _SPLIT_AWARE:
            rows = [GENERATORS[name](rng, i, split) for i in range(size)]
        else:
            rows = [GENERATORS[name](rng, i) for i in range(size)]
        tmp = out_dir / f".{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out_dir / f"{split}.jsonl")
    return out_dir


def _format_polarity(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    label = label_id(task, record["label"])
    meta = {"idx": record["idx"], "label": label}
    return [Example(f"sentence: {record['sentence']}", task.labels[label], meta)]


def _format_overlap(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    label = label_id(task, record["label"])
    meta = {"idx": record["idx"], "label": label}
    text = f"hypothesis: {record['hypothesis']} premise: {record['premise']}"
    return [Example(text, task.labels[label], meta)]


def _format_fact(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    label = label_id(task, record["label"])
    meta = {"idx": record["idx"], "label": label}
    text = f"passage: {record['passage']} question: {record['question']}"
    return [Example(text, task.labels[label], meta)]


def _toy_task(name, labels, formatter, columns, source="repro.tasks.toy", target_length=8):
    """A generated classification task scored by accuracy, with no init words."""
    return Task(
        name=name,
        hub_id=f"(generated by {source})",
        hub_config=None,
        labels=tuple(labels),
        init_words=(),
        metric_names=("accuracy",),
        formatter=formatter,
        metric=classification_metric,
        columns=columns,
        max_input_length=64,
        max_target_length=target_length,
    )


SENTENCE, PAIR = ("sentence", "label", "idx"), ("premise", "hypothesis", "label", "idx")
WORLD = "repro.toyworld.world"
TOY_TASKS = (
    _toy_task("toy_keyword", ("negative", "positive"), _format_polarity, SENTENCE),
    _toy_task("toy_polarity", ("negative", "positive"), _format_polarity, SENTENCE),
    _toy_task("toy_overlap", ("entailment", "not_entailment"), _format_overlap, PAIR),
    _toy_task("toy_review", world.REVIEW_LABELS, _format_polarity, SENTENCE, WORLD, 4),
    _toy_task(
        "toy_fact",
        world.FACT_LABELS,
        _format_fact,
        ("passage", "question", "label", "idx"),
        WORLD,
        4,
    ),
)
