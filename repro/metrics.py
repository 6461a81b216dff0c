"""Metrics as T5 computes them for SuperGLUE and the transfer tasks; every value is 0-100.

Class predictions arrive as class ids, with ``-1`` for an invalid generation (a string that is
no label); an invalid prediction is always counted as wrong. References: T5's
``t5/evaluation/metrics.py`` and ``t5/data/postprocessors.py`` (behaviour re-implemented here).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Hashable, Sequence

INVALID = -1

# T5's wsc_simple post-processor ignores these words when comparing a prediction to the referent.
WSC_DETERMINERS = frozenset(
    [
        "a",
        "an",
        "few",
        "her",
        "his",
        "each",
        "every",
        "many",
        "much",
        "my",
        "our",
        "some",
        "that",
        "the",
        "their",
        "these",
        "this",
        "those",
        "which",
        "whose",
        "your",
    ]
)


def _check_lengths(targets: Sequence, predictions: Sequence) -> None:
    if len(targets) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("cannot score an empty set of examples")


def accuracy(targets: Sequence[Hashable], predictions: Sequence[Hashable]) -> float:
    """Percentage of predictions equal to their target."""
    _check_lengths(targets, predictions)
    return 100.0 * sum(t == p for t, p in zip(targets, predictions, strict=True)) / len(targets)


def _f1(tp: int, fp: int, fn: int) -> float:
    # Equal to 2PR / (P + R); 0 when the class never occurs and is never predicted, as in
    # sklearn's f1_score (zero_division=0), which T5 wraps.
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_macro(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> float:
    """Macro F1 over classes ``0..num_classes-1`` (T5's ``mean_multiclass_f1``).

    Every class is averaged even if absent from targets and predictions (it then scores 0), so
    CB is always a mean over 3 classes. Invalid predictions (-1) are false negatives.
    """
    _check_lengths(targets, predictions)
    scores = []
    for c in range(num_classes):
        tp = sum(t == c and p == c for t, p in zip(targets, predictions, strict=True))
        fp = sum(t != c and p == c for t, p in zip(targets, predictions, strict=True))
        fn = sum(t == c and p != c for t, p in zip(targets, predictions, strict=True))
        scores.append(_f1(tp, fp, fn))
    return 100.0 * sum(scores) / num_classes


def f1_binary(targets: Sequence[int], predictions: Sequence[int]) -> float:
    """F1 of the positive class 1 (T5's ``f1_score_with_invalid``).

    An invalid prediction is replaced by the opposite of its target, so it is always an error
    (a false positive on a 0 target, a false negative on a 1 target).
    """
    _check_lengths(targets, predictions)
    fixed = [p if p in (0, 1) else 1 - t for t, p in zip(targets, predictions, strict=True)]
    tp = sum(t == 1 and p == 1 for t, p in zip(targets, fixed, strict=True))
    fp = sum(t == 0 and p == 1 for t, p in zip(targets, fixed, strict=True))
    fn = sum(t == 1 and p == 0 for t, p in zip(targets, fixed, strict=True))
    return 100.0 * _f1(tp, fp, fn)


def multirc(
    targets: Sequence[int], predictions: Sequence[int], groups: Sequence[Hashable]
) -> dict[str, float]:
    """MultiRC: F1a over all answers, and exact match = mean over questions of "all right".

    Args:
        targets: Gold label per answer (0/1).
        predictions: Predicted label per answer (0/1, or -1 if invalid).
        groups: Question id per answer; answers sharing it form one question.
    """
    _check_lengths(targets, predictions)
    by_question: dict[Hashable, list[bool]] = collections.defaultdict(list)
    for t, p, g in zip(targets, predictions, groups, strict=True):
        by_question[g].append(t == p)
    em = sum(all(v) for v in by_question.values()) / len(by_question)
    return {"f1a": f1_binary(targets, predictions), "exact_match": 100.0 * em}


# ------------------------------------------------------------------------------ SQuAD style
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = prediction.split(), gold.split()
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """SQuAD exact match and token F1, each the max over an example's gold answers.

    Args:
        predictions: One predicted answer string per example.
        answers: All gold answers per example (at least one each).
    """
    _check_lengths(answers, predictions)
    em = f1 = 0.0
    for prediction, golds in zip(predictions, answers, strict=True):
        if not golds:
            raise ValueError(f"no gold answer to score prediction {prediction!r} against")
        pred = normalize_answer(prediction)
        normed = [normalize_answer(g) for g in golds]
        em += max(float(pred == g) for g in normed)
        f1 += max(_token_f1(pred, g) for g in normed)
    return {"exact_match": 100.0 * em / len(answers), "f1": 100.0 * f1 / len(answers)}


# ------------------------------------------------------------------------------------- WSC
def _wsc_clean(text: str) -> str:
    words = text.strip().lower().split(" ")
    return " ".join(w for w in words if w not in WSC_DETERMINERS)


def wsc_simple(prediction: str, referent: str) -> int:
    """T5's "simple" WSC post-processing: did the model name the referent?

    Both strings are lower-cased and stripped of determiners; the prediction names the
    referent when one word set contains the other, unless exactly one of them is possessive
    (has an apostrophe). Returns 1 (referent), 0 (something else) or -1 for an empty
    prediction, which can then never match a label.
    """
    pred = _wsc_clean(prediction)
    if not pred:
        return INVALID
    ref = _wsc_clean(referent)
    # "Bob" must not count as naming "Bob's hat".
    if ("'" in pred) != ("'" in ref):
        return 0
    pred_words, ref_words = set(pred.split(" ")), set(ref.split(" "))
    return int(pred_words <= ref_words or ref_words <= pred_words)
