"""Domain-transfer tasks (paper §6): QQP ↔ MRPC paraphrase transfer, SQuAD → MRQA out-of-domain.

QQP and MRPC share a format (``question1/2`` vs ``sentence1/2``, alphabetical) and have their own
label words; :func:`map_labels` maps one task's predicted labels to the other's by class id
for zero-shot transfer. SQuAD/MRQA are T5's ``question: … context: …`` → the first gold answer,
scored by SQuAD F1 (max over gold answers), with question, context and every answer passed
through T5's ``_pad_punctuation`` (:func:`pad_punctuation`) as T5's ``preprocessors.squad`` and
the official MRQA path (``prompt_tuning/scripts/mrqa_to_tsv.py`` then
``preprocess_tsv_to_qa``) do. MRQA's hub ``test`` split holds the 6 out-of-domain dev sets
(labeled), which is why it is MRQA's evaluation split; the official path keeps the first
question of each context (:func:`first_question_per_context`). docs/fidelity.md has the sources.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from typing import Any

from repro import metrics
from repro.tasks.base import Example, Task, classification_metric
from repro.tasks.superglue import classification_formatter, normalise_flat


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


# T5's _pad_punctuation as the paper ran it (t5 <= 0.9.3, the releases of 2020-2021): TF's
# regex_replace (RE2, UTF-8) of r"(\W)" by r" \1 ", then of r"\s+" by " ". RE2's \W and \s are
# ASCII classes: every code point but [0-9A-Za-z_] is padded (so "é", "–" and "’" too), and
# only [\t\n\f\r ] is whitespace (a no-break space stays, padded). t5 0.9.4 (2023) pads
# [[:punct:]] instead (ASCII punctuation only, "_" included); mT5 pads
# [^_\s\p{N}\p{L}\p{M}]. Neither ran the paper's tables.
_NOT_WORD = re.compile(r"([^0-9A-Za-z_])")
_RE2_SPACE = re.compile(r"[\t\n\f\r ]+")
# mrqa_to_tsv.py's normalize_whitespace: Python's own (Unicode) \s.
_ANY_SPACE = re.compile(r"\s+")
# mrqa_to_tsv.py joins a question's answers with "|||" into one TSV field.
ANSWER_DELIM = "|||"


def pad_punctuation(text: str) -> str:
    """T5's ``_pad_punctuation``: a space on each side of every character that is not an ASCII
    letter, digit or ``_``, then runs of ASCII whitespace collapsed to one space (not stripped).

    >>> pad_punctuation("Saint-Denis, 1,000 (François)")
    'Saint - Denis , 1 , 000 ( Fran ç ois ) '
    """
    return _RE2_SPACE.sub(" ", _NOT_WORD.sub(r" \1 ", text))


def string_join(parts: Sequence[str]) -> str:
    """T5's ``_string_join``: joined on spaces, runs of whitespace collapsed (not stripped)."""
    return _RE2_SPACE.sub(" ", " ".join(parts))


def answer_texts(record: Mapping[str, Any]) -> list[str]:
    """Gold answers of SQuAD (``{"text": [...], "answer_start": [...]}``) or MRQA (a list)."""
    answers = record["answers"]
    return list(answers["text"] if isinstance(answers, Mapping) else answers)


def _qa_example(task: Task, record, question: str, context: str, target: str, answers) -> Example:
    meta = {
        "idx": record.get("id", record.get("qid")),
        "answers": tuple(pad_punctuation(a) for a in answers),
        "subset": record.get("subset", task.name),
    }
    q, c = pad_punctuation(question), pad_punctuation(context)
    inputs = string_join(["question:", q, "context:", c])
    return Example(inputs, pad_punctuation(target), meta)


def _gold(task: Task, record: Mapping[str, Any]) -> list[str]:
    answers = answer_texts(record)
    if not answers:
        raise ValueError(f"task {task.name!r}: question {record.get('id')!r} has no gold answer")
    return answers


def format_squad(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    """T5's ``preprocessors.squad``: ``question: <q> context: <c>`` → the first answer, each
    text padded (:func:`pad_punctuation`); every padded answer kept for scoring."""
    answers = _gold(task, record)
    return [_qa_example(task, record, record["question"], record["context"], answers[0], answers)]


def tsv_round_trip(field: str) -> str:
    """A field as the official MRQA path reads it back: pandas' ``to_csv`` quotes a field that
    holds a double quote (doubling each inner one) and ``tf.io.decode_csv(...,
    use_quote_delim=False)`` keeps those quotes as text."""
    return f'"{field.replace(chr(34), chr(34) * 2)}"' if '"' in field else field


def format_mrqa(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    """The official MRQA path (``mrqa_to_tsv.py`` → TSV → ``preprocess_tsv_to_qa``): whitespace
    runs become one space, each field goes through the TSV (:func:`tsv_round_trip`), the target
    is the first *detected* answer (the span found in the context; the first answer when the
    record has none) and the answers, split back on ``|||``, are scored; all padded."""
    answers = [_ANY_SPACE.sub(" ", a) for a in _gold(task, record)]
    detected = record.get("detected_answers") or {}
    detected_texts = (
        detected.get("text", []) if isinstance(detected, Mapping) else [d["text"] for d in detected]
    )
    target = _ANY_SPACE.sub(" ", detected_texts[0]) if detected_texts else answers[0]
    question, context = (
        tsv_round_trip(_ANY_SPACE.sub(" ", record[k])) for k in ("question", "context")
    )
    golds = tsv_round_trip(ANSWER_DELIM.join(answers)).split(ANSWER_DELIM)
    return [_qa_example(task, record, question, context, tsv_round_trip(target), golds)]


def first_question_per_context(task: Task, records: list[dict]) -> list[dict]:
    """The official MRQA path keeps one question per context: ``mrqa_to_tsv.py`` writes
    ``qas[0]`` of each JSON line (a context and its questions). The hub's split holds every
    question, one row each, a context's questions in a row: the first row of each run of rows
    with the same (subset, context) is kept."""
    kept, last = [], None
    for record in records:
        key = (record.get("subset"), record["context"])
        if key != last:
            kept.append(record)
        last = key
    return kept


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


def _qa(name: str, hub_id: str, eval_split: str, formatter, select=None) -> Task:
    return Task(
        name=name,
        hub_id=hub_id,
        hub_config=None,
        labels=(),
        init_words=(),
        metric_names=("f1",),
        formatter=formatter,
        metric=qa_metric,
        columns=("question", "context", "answers"),
        dir_names=(name,),
        # Answers are spans of several words; 8 target tokens (the classification default)
        # would cut many of them.
        max_target_length=32,
        eval_split=eval_split,
        select=select,
    )


SQUAD = _qa("squad", "rajpurkar/squad", "validation", format_squad)
MRQA = _qa("mrqa", "mrqa-workshop/mrqa", "test", format_mrqa, first_question_per_context)

TRANSFER_TASKS: tuple[Task, ...] = (QQP, MRPC, SQUAD, MRQA)
