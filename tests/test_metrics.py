"""Metrics on hand-computed cases (values on the 0-100 scale)."""

from __future__ import annotations

import pytest

from repro import metrics
from repro.tasks import get_task


def test_accuracy():
    assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 75.0


def test_cb_macro_f1_with_a_missing_class():
    # Class 2 (neutral) never occurs nor is predicted: it still counts, with F1 0.
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 2, fp 1, fn 0 -> 4/5.
    targets, preds = [0, 0, 1, 1], [0, 1, 1, 1]
    assert metrics.f1_macro(targets, preds, num_classes=3) == pytest.approx(
        100 * (2 / 3 + 4 / 5) / 3
    )


def test_cb_task_metrics_and_score_with_a_missing_class():
    cb = get_task("cb")
    exs = cb.format(
        [
            {"premise": "p", "hypothesis": "h", "idx": i, "label": y}
            for i, y in enumerate([0, 0, 1, 1])
        ],
        train=False,
    )
    m = cb.score(["entailment", "contradiction", "contradiction", "contradiction"], exs)
    assert m == pytest.approx({"f1_macro": 100 * (2 / 3 + 4 / 5) / 3, "accuracy": 75.0})
    assert cb.task_score(m) == pytest.approx((100 * (2 / 3 + 4 / 5) / 3 + 75.0) / 2)


def test_macro_f1_invalid_prediction_is_a_miss():
    assert metrics.f1_macro([0, 1], [0, metrics.INVALID], num_classes=3) == pytest.approx(100 / 3)


def test_binary_f1_counts_invalid_as_the_wrong_class():
    # Invalid on a 0 target becomes a false positive: tp 1, fp 1 -> 2/3.
    assert metrics.f1_binary([1, 0], [1, -1]) == pytest.approx(200 / 3)
    # Invalid on a 1 target becomes a false negative: tp 0 -> 0.
    assert metrics.f1_binary([1, 0], [-1, 0]) == 0.0


def test_multirc_exact_match_with_two_questions():
    targets = [1, 0, 1, 1, 0]
    preds = [1, 0, 1, 0, 0]
    groups = ["q1", "q1", "q2", "q2", "q2"]
    m = metrics.multirc(targets, preds, groups)
    # q1 all right, q2 one wrong -> EM 50. F1a: tp 2, fp 0, fn 1 -> 4/5.
    assert m == pytest.approx({"f1a": 80.0, "exact_match": 50.0})


def test_squad_normalisation():
    assert metrics.normalize_answer("  The  Benazir-Bhutto, an ") == "benazirbhutto"
    assert metrics.normalize_answer("A cat's toy.") == "cats toy"


def test_record_several_gold_answers_take_the_best():
    golds = [["Benazir Bhutto", "Bhutto"], ["Benazir Bhutto", "Bhutto"]]
    m = metrics.squad(["the Bhutto", "Benazir"], golds)
    # Query 1 matches "Bhutto" exactly; query 2: "benazir" vs "benazir bhutto" P 1, R 1/2.
    assert m == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})


def test_record_task_groups_per_query():
    record = get_task("record")
    base = {"passage": "p", "query": "q", "entities": ["X", "Y"]}
    exs = record.format(
        [
            {**base, "answers": ["X", "X Y"], "idx": {"passage": 0, "query": 0}},
            {**base, "answers": ["Y"], "idx": {"passage": 0, "query": 1}},
        ],
        train=False,
    )
    assert len(exs) == 2
    assert record.score(["X Y", "X"], exs) == pytest.approx({"exact_match": 50.0, "f1": 50.0})
    assert record.task_score({"exact_match": 50.0, "f1": 70.0}) == 60.0


@pytest.mark.parametrize(
    ("prediction", "referent", "expected"),
    [
        ("the dog", "Dog", 1),  # case and determiners ignored
        ("fuzzy bunny", "bunny", 1),  # referent words within prediction
        ("bunny", "the fuzzy bunny", 1),  # prediction words within referent
        ("Bob", "Bob's hat", 0),  # possessive on one side only
        ("cat", "dog", 0),
        ("", "dog", -1),  # empty: never matches a label
        ("the", "dog", -1),  # only a determiner: empty after cleaning
    ],
)
def test_wsc_simple_match(prediction, referent, expected):
    assert metrics.wsc_simple(prediction, referent) == expected


def test_length_mismatch_and_empty_inputs_raise():
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        metrics.accuracy([0], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])
