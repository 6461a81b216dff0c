"""Span Corruption + Sentinel (Figure 3c): the sentinel added to the text, decoded, stripped."""

import pytest
import torch
from torch import nn

from repro.evaluate import decode, evaluate, strip_sentinel
from repro.objectives import SENTINEL, add_sentinel
from repro.tasks import Example, get_task

EXAMPLES = [Example("hypothesis: a premise: b", "entailment", {"label": 0})]


def test_add_sentinel_prefixes_targets_only_by_default():
    (ex,) = add_sentinel(EXAMPLES)
    assert (ex.inputs, ex.targets) == ("hypothesis: a premise: b", "<extra_id_0> entailment")
    assert ex.meta == {"label": 0}
    assert EXAMPLES[0].targets == "entailment"  # the originals are not modified


def test_add_sentinel_inputs_and_targets_also_ends_the_input_with_it():
    (ex,) = add_sentinel(EXAMPLES, "inputs_and_targets")
    assert ex.inputs == "hypothesis: a premise: b <extra_id_0>"
    assert ex.targets == "<extra_id_0> entailment"


def test_add_sentinel_rejects_an_unknown_placement():
    with pytest.raises(ValueError, match=r"'inputs'.*targets, inputs_and_targets"):
        add_sentinel(EXAMPLES, "inputs")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<extra_id_0> entailment", "entailment"),
        ("<extra_id_0>entailment", "entailment"),
        ("  <extra_id_0> not_entailment ", "not_entailment"),
        ("entailment", "entailment"),  # a model that skipped the sentinel is judged as is
        ("<extra_id_1> entailment", "<extra_id_1> entailment"),  # another sentinel stays
        ("<extra_id_0>", ""),
    ],
)
def test_strip_sentinel(text, expected):
    assert strip_sentinel(text) == expected


def test_decode_keeps_sentinels_and_stops_at_eos(tokenizer):
    ids = tokenizer("<extra_id_0> entailment", add_special_tokens=False).input_ids
    other = tokenizer("<extra_id_1> True", add_special_tokens=False).input_ids
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [[pad, *ids, eos, *other], [pad, *other, eos, pad, pad]]
    width = max(map(len, rows))
    sequences = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    texts = decode(tokenizer, sequences)
    assert texts[0] == "<extra_id_0> entailment"  # nothing after eos
    assert texts[1] == "<extra_id_1> True"  # an invalid sentinel answer stays visible


class Scripted(nn.Module):
    """Stands in for PromptedT5: generates given texts, ranks by given scores."""

    def __init__(self, tokenizer, outputs):
        super().__init__()
        self.rows = [[0, *tokenizer(o).input_ids] for o in outputs]  # decoder start, ..., eos
        self.candidates = []

    def generate(self, input_ids, attention_mask, max_new_tokens):
        width = max(map(len, self.rows))
        return torch.tensor([r + [0] * (width - len(r)) for r in self.rows[: len(input_ids)]])

    def score_candidates(self, input_ids, attention_mask, candidate_ids):
        self.candidates = candidate_ids
        return torch.tensor([[0.0, 1.0]] * len(input_ids))  # always the second candidate


def test_evaluate_with_sentinel_strips_it_before_scoring(tokenizer):
    rte = get_task("rte")
    examples = [
        Example("x", "entailment", {"label": 0}),
        Example("y", "not_entailment", {"label": 1}),
    ]
    outputs = ["<extra_id_0> entailment", "<extra_id_0> not_entailment"]
    ids = [[5, 1], [6, 1]]
    metrics, predictions = evaluate(
        Scripted(tokenizer, outputs), tokenizer, rte, examples, ids, sentinel=True
    )
    assert predictions == ["entailment", "not_entailment"]
    assert metrics == {"accuracy": 100.0}
    # Without the sentinel switch the same outputs are invalid answers.
    metrics, _ = evaluate(Scripted(tokenizer, outputs), tokenizer, rte, examples, ids)
    assert metrics == {"accuracy": 0.0}


def test_rank_with_sentinel_scores_the_strings_the_model_was_trained_on(tokenizer):
    rte = get_task("rte")
    model = Scripted(tokenizer, [])
    examples = [Example("x", "not_entailment", {"label": 1})]
    metrics, predictions = evaluate(
        model, tokenizer, rte, examples, [[5, 1]], mode="rank", sentinel=True
    )
    expected = [tokenizer(f"{SENTINEL} {label}").input_ids for label in rte.labels]
    assert model.candidates == expected
    assert predictions == ["not_entailment"] and metrics == {"accuracy": 100.0}
