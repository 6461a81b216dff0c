"""Domain-transfer tasks (paper §6): QQP ↔ MRPC paraphrase transfer, SQuAD → MRQA out-of-domain.

QQP and MRPC share a format (``question1/2`` vs ``sentence1/2``, alphabetical) and have their own
label words; :func:`map_labels` maps one task's predicted labels to the other's by class id
for zero-shot transfer. SQuAD/MRQA: ``question: … context: …`` → the first gold answer; scored
by SQuAD F1 (max over gold answers). MRQA's hub ``test`` split holds the 6 out-of-domain dev
sets (labeled), which is why it is MRQA's evaluation split.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

from repro import metrics
from repro.tasks.base import Example, Task, classification_metric
from repro.tasks.superglue import classification_formatter, join_fields, normalise_flat


def _paraphrase(name: str, keys: tuple[str, str], labels: tuple[str, str]) -> Task:
    return Task(
        name=name,
        hub_id="nyu-mll/glue",
        hub_config=name,
        labels=labels,
        init_words=(),
        # T5's GLUE metrics for both; paper Table 2 reports accuracy and F1.
        metric_names=("f1", "accuracy"),
        formatter=classification_formatter(keys),
        metric=classification_metric,
        columns=(*keys, "label"),
        normaliser=normalise_flat,
        text_fields=keys,
        dir_names=(name,),
    )


QQP = _paraphrase("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"))
MRPC = _paraphrase("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"))


def map_labels(predictions: Sequence[str], source: Task, target: Task) -> list[str]:
    """Maps label strings of ``source`` to those of ``target`` with the same class id.

    For zero-shot transfer: a prompt trained on QQP says ``duplicate``; scored on MRPC that
    means ``equivalent``. Strings that are no ``source`` label stay as they are (and so count
    as invalid, i.e. wrong, unless they already are a ``target`` label).
    """
    if len(source.labels) != len(target.labels):
        raise ValueError(
            f"cannot map labels of {source.name!r} {source.labels} onto {target.name!r} "
            f"{target.labels}: different numbers of classes"
        )
    mapping = dict(zip(source.labels, target.labels, strict=True))
    return [mapping.get(p.strip(), p) for p in predictions]


def answer_texts(record: Mapping[str, Any]) -> list[str]:
    """Gold answers of SQuAD (``{"text": [...], "answer_start": [...]}``) or MRQA (a list)."""
    answers = record["answers"]
    return list(answers["text"] if isinstance(answers, Mapping) else answers)


def format_qa(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    """``question: … context: …`` → the first gold answer; all answers kept for scoring."""
    answers = answer_texts(record)
    if not answers:
        raise ValueError(f"task {task.name!r}: question {record.get('id')!r} has no gold answer")
    meta = {
        "idx": record.get("id", record.get("qid")),
        "answers": tuple(answers),
        "subset": record.get("subset", task.name),
    }
    return [Example(join_fields(record, ("question", "context")), answers[0], meta)]


def qa_metric(task: Task, predictions: Sequence[str], examples: Sequence[Example]):
    """SQuAD F1/EM overall and, when examples come from several subsets (MRQA), per subset."""
    out = metrics.squad(predictions, [ex.meta["answers"] for ex in examples])
    by_subset: dict[str, list[int]] = collections.defaultdict(list)
    for i, ex in enumerate(examples):
        by_subset[ex.meta["subset"]].append(i)
    if len(by_subset) > 1:
        for subset, ids in sorted(by_subset.items()):
            sub = metrics.squad(
                [predictions[i] for i in ids], [examples[i].meta["answers"] for i in ids]
            )
            out[f"f1/{subset}"] = sub["f1"]
            out[f"exact_match/{subset}"] = sub["exact_match"]
    return out


def _qa(name: str, hub_id: str, hub_config: str | None, eval_split: str) -> Task:
    return Task(
        name=name,
        hub_id=hub_id,
        hub_config=hub_config,
        labels=(),
        init_words=(),
        metric_names=("f1",),
        formatter=format_qa,
        metric=qa_metric,
        columns=("question", "context", "answers"),
        dir_names=(name,),
        # Answers are spans of several words; 8 target tokens (the classification default)
        # would cut many of them.
        max_target_length=32,
        eval_split=eval_split,
    )


SQUAD = _qa("squad", "rajpurkar/squad", None, "validation")
MRQA = _qa("mrqa", "mrqa-workshop/mrqa", None, "test")

TRANSFER_TASKS: tuple[Task, ...] = (QQP, MRPC, SQUAD, MRQA)
