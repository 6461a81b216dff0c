"""Toy tasks the suite generates itself, in the same text-to-text form as SuperGLUE.

They exist so the whole pipeline (local data loading, formatting, training, scoring) runs
offline on a CPU. Each task's ``generate`` (:func:`generator`) writes seeded ``train.jsonl`` /
``validation.jsonl`` files in the same hub-like schema the real tasks read; a run generates them
once into the cache (``<paths.cache_dir>/toy-data/<task>``) and reads them from there.

- ``toy_keyword``: filler words with one of the label words ``negative`` / ``positive`` among
  them; the target is that word. A prompt on a *random* frozen T5 can learn to find it, so the
  smoke run (tiny random model) has something to learn.
- ``toy_polarity``: one sentence holding exactly one polar word among neutral filler words;
  target ``positive`` / ``negative`` (SST-2-like, single input).
- ``toy_overlap``: ``hypothesis: … premise: …``; ``entailment`` if every hypothesis word
  occurs in the premise, else ``not_entailment`` (RTE-like, pair input).

Two more, ``toy_review`` and ``toy_fact``, belong to the toy world built on top of the suite
(``repro.toyworld.tasks``, docs/toy_world.md), which registers them with the same pieces.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from repro.tasks.base import Example, Task, classification_metric, label_id

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


def write_records(
    out_dir: str | Path,
    *,
    name: str,
    record: Callable[..., dict[str, Any]],
    sizes: Mapping[str, int] = SIZES,
    split_aware: bool = False,
    seed: int = 0,
) -> Path:
    """Write seeded ``train.jsonl`` and ``validation.jsonl`` of ``record(rng, idx[, split])``.

    The rows depend only on (name, seed, split), so every run reads the same files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for offset, (split, size) in enumerate(sizes.items()):
        rng = random.Random(f"{name}-{seed}-{offset}")
        if split_aware:
            rows = [record(rng, i, split) for i in range(size)]
        else:
            rows = [record(rng, i) for i in range(size)]
        tmp = out_dir / f".{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out_dir / f"{split}.jsonl")
    return out_dir


def generator(name: str, record, sizes=SIZES, split_aware: bool = False) -> Callable[[Path], Path]:
    """A task's ``generate``: :func:`write_records` with the task's record function."""
    return functools.partial(
        write_records, name=name, record=record, sizes=sizes, split_aware=split_aware
    )


def format_polarity(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    label = label_id(task, record["label"])
    meta = {"idx": record["idx"], "label": label}
    return [Example(f"sentence: {record['sentence']}", task.labels[label], meta)]


def _format_overlap(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    label = label_id(task, record["label"])
    meta = {"idx": record["idx"], "label": label}
    text = f"hypothesis: {record['hypothesis']} premise: {record['premise']}"
    return [Example(text, task.labels[label], meta)]


def toy_task(
    name,
    labels,
    formatter,
    columns,
    record,
    *,
    source="repro.tasks.toy",
    target_length=8,
    sizes=SIZES,
    split_aware=False,
):
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
        text_fields=tuple(c for c in columns if c not in ("label", "idx")),
        max_input_length=64,
        max_target_length=target_length,
        generate=generator(name, record, sizes, split_aware),
    )


SENTENCE, PAIR = ("sentence", "label", "idx"), ("premise", "hypothesis", "label", "idx")
POLAR = ("negative", "positive")
TOY_TASKS = (
    toy_task("toy_keyword", POLAR, format_polarity, SENTENCE, _keyword_record),
    toy_task("toy_polarity", POLAR, format_polarity, SENTENCE, _polarity_record),
    toy_task(
        "toy_overlap", ("entailment", "not_entailment"), _format_overlap, PAIR, _overlap_record
    ),
)
