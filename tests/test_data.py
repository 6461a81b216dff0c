"""Tokenisation, length bucketing and collation."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch

from repro.data import IGNORE_INDEX, Encoded, collate, encode, length_batches, padding_fraction
from repro.tasks import Example


def test_encode_appends_eos_and_counts_truncation(tokenizer, caplog):
    eos = tokenizer.eos_token_id
    short = Example("hypothesis: the cat", "entailment")
    long = Example(" ".join(["the cat sat on the mat"] * 20), "not_entailment because it is long")
    plain = tokenizer([short.inputs, short.targets], add_special_tokens=False)["input_ids"]
    with caplog.at_level(logging.WARNING, logger="repro.data"):
        enc = encode([short, long], tokenizer, max_input_length=16, max_target_length=4)
    assert enc.input_ids[0] == [*plain[0], eos]
    assert enc.labels[0] == [*plain[1], eos]
    assert len(enc.input_ids[1]) == 16 and enc.input_ids[1][-1] == eos
    assert len(enc.labels[1]) == 4 and enc.labels[1][-1] == eos
    assert (enc.n_truncated_inputs, enc.n_truncated_targets) == (1, 1)
    assert "truncated 1 of 2 inputs" in caplog.text
    assert enc.lengths == [len(plain[0]) + 1, 16]
    assert enc[0] == {"input_ids": enc.input_ids[0], "labels": enc.labels[0]}


def test_encode_without_truncation_logs_nothing(tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="repro.data"):
        enc = encode([Example("a b", "True")], tokenizer, 512, 8)
    assert (enc.n_truncated_inputs, enc.n_truncated_targets) == (0, 0)
    assert caplog.text == ""


def test_encode_rejects_limits_without_room_for_eos(tokenizer):
    with pytest.raises(ValueError, match="max_target_length must be >= 2"):
        encode([Example("a", "b")], tokenizer, 8, 1)


def test_padding_fraction_by_hand():
    lengths = [1, 10, 2, 9]
    # Plain batches [0, 1], [2, 3]: padding 9 + 7 of 20 + 18 positions.
    assert padding_fraction(lengths, [[0, 1], [2, 3]]) == pytest.approx(16 / 38)
    sorted_batches = length_batches(lengths, 2, shuffle=False, seed=0)
    assert sorted_batches == [[1, 3], [2, 0]]  # longest first
    assert padding_fraction(lengths, sorted_batches) == pytest.approx(2 / 24)


def test_bucketing_keeps_every_example_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000).tolist()
    batch_size = 32
    plain = [list(range(i, min(i + batch_size, 1000))) for i in range(0, 1000, batch_size)]
    bucketed = length_batches(lengths, batch_size, shuffle=True, seed=1, epoch=0)

    flat = [i for b in bucketed for i in b]
    assert Counter(flat) == Counter(i for b in plain for i in b)  # each index exactly once
    assert sorted(len(b) for b in bucketed) == sorted(len(b) for b in plain)
    assert len(bucketed[-1]) == 1000 % batch_size  # last partial batch kept, at the end

    # Random batches of uniform lengths pad about half; pools of 16 batches about 5 %.
    assert padding_fraction(lengths, plain) > 0.4
    assert padding_fraction(lengths, bucketed) < 0.1


def test_length_batches_deterministic_per_seed_and_epoch():
    lengths = list(range(100, 0, -1)) * 3
    a = length_batches(lengths, 8, shuffle=True, seed=3, epoch=2)
    assert a == length_batches(lengths, 8, shuffle=True, seed=3, epoch=2)
    assert a != length_batches(lengths, 8, shuffle=True, seed=3, epoch=3)
    assert a != length_batches(lengths, 8, shuffle=True, seed=4, epoch=2)


def test_pool_of_one_batch_is_plain_random_batching():
    lengths = list(range(64))
    batches = length_batches(lengths, 8, shuffle=True, seed=0, pool_batches=1)
    perm = np.random.default_rng([0, 0]).permutation(64)
    assert sorted(sorted(b) for b in batches) == sorted(
        sorted(perm[i : i + 8].tolist()) for i in range(0, 64, 8)
    )


def test_length_batches_edge_cases():
    assert length_batches([], 4, shuffle=True, seed=0) == []
    assert length_batches([3, 1, 2], 4, shuffle=True, seed=0) == [[0, 2, 1]]
    with pytest.raises(ValueError, match="batch_size"):
        length_batches([1], 0, shuffle=False, seed=0)


def test_collate_pads_right_and_masks_labels():
    enc = Encoded(input_ids=[[5, 6, 1], [7, 1]], labels=[[9, 1], [8, 4, 1]])
    batch = collate([enc[0], enc[1]], pad_id=0)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 1], [7, 1, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[9, 1, IGNORE_INDEX], [8, 4, 1]]))
    assert batch["input_ids"].dtype == torch.long


def test_collate_without_labels_and_empty_batch():
    assert set(collate([{"input_ids": [3, 1]}], pad_id=0)) == {"input_ids", "attention_mask"}
    with pytest.raises(ValueError, match="empty"):
        collate([], pad_id=0)
