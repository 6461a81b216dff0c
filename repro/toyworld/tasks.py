"""The toy world's two tasks, registered with the suite's task registry on import.

- ``toy_review``: ``sentence: <a one-sentence review>`` → ``negative`` / ``positive``
  (SST-2-like); 3 of the 10 adjectives per class in its dev split never occur in its train split.
- ``toy_fact``: ``passage: <2-3 facts> question: <yes/no question>`` → ``no`` / ``yes``
  (BoolQ-like, pair input, keys in alphabetical order as in T5).

Both are generated from ``repro.toyworld.world`` (the world the shipped toy checkpoints were
pre-trained on) with the core's toy-task pieces; the core never imports this module: the entry
points (``repro.run``, ``repro.cost``) import ``repro.toyworld``, which registers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repro.tasks import register_mixture, register_task
from repro.tasks.base import Example, Task, label_id
from repro.tasks.toy import SENTENCE, format_polarity, toy_task
from repro.toyworld import world

# More dev examples than the core's toy tasks, so a 3-seed mean is not dominated by dev noise.
WORLD_SIZES = {"train": 1000, "validation": 200}
SOURCE = "repro.toyworld.world"


def format_fact(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    label = label_id(task, record["label"])
    meta = {"idx": record["idx"], "label": label}
    text = f"passage: {record['passage']} question: {record['question']}"
    return [Example(text, task.labels[label], meta)]


TOY_REVIEW = toy_task(
    "toy_review",
    world.REVIEW_LABELS,
    format_polarity,
    SENTENCE,
    world.review_record,
    source=SOURCE,
    target_length=4,
    sizes=WORLD_SIZES,
    split_aware=True,
)
TOY_FACT = toy_task(
    "toy_fact",
    world.FACT_LABELS,
    format_fact,
    ("passage", "question", "label", "idx"),
    world.fact_record,
    source=SOURCE,
    target_length=4,
    sizes=WORLD_SIZES,
    split_aware=True,
)
WORLD_TASKS = (TOY_REVIEW, TOY_FACT)

for _task in WORLD_TASKS:
    register_task(_task)
# `task=toy`: both toy-world tasks (Figure 1's toy twin; one mixture for method=model_multitask)
register_mixture("toy", (TOY_REVIEW.name, TOY_FACT.name))
