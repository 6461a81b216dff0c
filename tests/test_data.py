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


def test_target_limit_fits_every_gold_on_a_tokenizer_of_short_pieces():
    from transformers import ByT5Tokenizer

    from repro.data import target_limit

    bytes_tokenizer = ByT5Tokenizer()  # one piece per byte: "contradiction" is 13 pieces
    labels = ("entailment", "contradiction", "neutral")
    limit = target_limit(labels, ["neutral", "contradiction"], bytes_tokenizer)
    assert (limit.length, limit.source, limit.longest) == (14, "data", 14)  # 13 + eos > 8
    assert (limit.n_golds, limit.n_golds_over) == (2, 0)
    enc = encode([Example("a", t) for t in labels], bytes_tokenizer, 16, limit.length)
    assert enc.n_truncated_targets == 0 and max(map(len, enc.labels)) == 14

    # The official demos' 8 tokens: 1 of the 2 golds can never be produced, and it is counted.
    short = target_limit(labels, ["neutral", "contradiction"], bytes_tokenizer, configured=8)
    assert (short.length, short.source, short.n_golds_over) == (8, "config", 1)
    # A task's own limit is used when the config sets none.
    own = target_limit(labels, ["contradiction"], bytes_tokenizer, task_default=32)
    assert (own.length, own.source, own.n_golds_over) == (32, "task", 0)


def test_random_batching_is_the_default_and_does_not_group_equal_lengths():
    from repro.data import train_batches
    from repro.trainer_config import TrainerConfig

    assert TrainerConfig().batching == "random"
    # MultiRC-like data: groups of 4 examples of one length (the answers to one question).
    lengths = [100 + 7 * (i // 4) for i in range(512)]
    same_group = {}
    for batching in ("random", "bucketed"):
        batches = train_batches(lengths, 8, batching=batching, seed=0, epoch=0)
        assert sorted(i for b in batches for i in b) == list(range(512))
        # Pairs of examples sharing a batch that come from the same group.
        pairs = [(a, b) for batch in batches for a in batch for b in batch if a < b]
        same_group[batching] = sum(a // 4 == b // 4 for a, b in pairs) / len(pairs)
    # Random batches: P(same group) = 3/511 ≈ 0.6 %; bucketed pools sort equal lengths together.
    assert same_group["random"] < 0.02
    assert same_group["bucketed"] > 0.05  # measured: 10.6 %, 17x the random share
    # Random batches are cuts of the epoch's permutation (the order depends on seed and epoch).
    perm = np.random.default_rng([0, 0]).permutation(512)
    expected = sorted(sorted(perm[i : i + 8].tolist()) for i in range(0, 512, 8))
    got = train_batches(lengths, 8, batching="random", seed=0, epoch=0)
    assert sorted(sorted(b) for b in got) == expected


def test_unknown_batching_is_refused():
    from repro.data import train_batches
    from repro.trainer_config import TrainerConfig

    with pytest.raises(ValueError, match=r"trainer.batching='sorted'.*random, bucketed"):
        TrainerConfig(batching="sorted")
    with pytest.raises(ValueError, match="random, bucketed"):
        train_batches([1, 2], 1, batching="sorted", seed=0, epoch=0)


def test_packed_rows_fill_next_fit_within_windows_as_seqio_by_hand():
    from repro.data import packed_rows

    lengths = [3, 4, 2, 5, 1, 6, 6]
    # rows of 8 tokens, windows of 8 examples: [3+4] (2 would make 9), [2+5+1], [6], [6]
    assert packed_rows(lengths, range(7), 8) == [[0, 1], [2, 3, 4], [5], [6]]
    # rows of 4 tokens = windows of 4 examples: the window [3, 4, 2, 5] closes its last row;
    # a longer example than a row fills one alone (seqio trims it to the row first)
    assert packed_rows(lengths, range(7), 4) == [[0], [1], [2], [3], [4], [5], [6]]
    assert packed_rows([1] * 6, range(6), 4) == [[0, 1, 2, 3], [4, 5]]  # 2 windows, 2 rows
    assert packed_rows([1, 1, 1], [2, 0, 1], 8) == [[2, 0, 1]]  # in the order given


def test_token_batches_hold_the_examples_of_packed_rows():
    from repro.data import token_batches, train_batches

    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(4.3, 0.6, size=5000).astype(int), 4, 512).tolist()
    rows, row_tokens = 16, 512
    batches = token_batches(lengths, rows, row_tokens, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(5000))  # each once an epoch
    assert batches == train_batches(
        lengths, rows, batching="random", seed=3, epoch=1, batch_tokens=rows * row_tokens
    )
    assert batches != token_batches(lengths, rows, row_tokens, seed=3, epoch=2)
    # the epoch's permutation, in order: the batches are consecutive runs of it
    perm = np.random.default_rng([3, 1]).permutation(5000).tolist()
    assert [i for b in batches for i in b] == perm
    # every step fits its rows: at most 16 × 512 input tokens, and far more than 16 examples
    # (the suite's fixed batch): ~5x at these lengths (mean ≈ 88 tokens)
    tokens = [sum(lengths[i] for i in b) for b in batches]
    assert max(tokens) <= rows * row_tokens
    sizes = [len(b) for b in batches[:-1]]
    assert 4 * rows < np.mean(sizes) < rows * row_tokens / np.mean(lengths)
    # next-fit: a row is closed only by an example that does not fit it (within a window)
    from repro.data import packed_rows

    packed = packed_rows(lengths, perm, row_tokens)
    for j in range(len(packed) - 1):
        first_next = packed[j + 1][0]
        if perm.index(first_next) % row_tokens:  # not the first example of a new window
            assert sum(lengths[i] for i in packed[j]) + lengths[first_next] > row_tokens
    assert all(sum(lengths[i] for i in row) <= row_tokens for row in packed)


def test_token_micro_batches_stay_under_their_padded_token_cap():
    from repro.data import token_micro_batches

    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 300, size=400).tolist()
    idx = list(range(0, 400, 2))
    cap = 2048
    chunks = token_micro_batches(idx, lengths, cap)
    assert sorted(i for c in chunks for i in c) == idx
    for c in chunks:
        assert lengths[c[0]] == max(lengths[i] for i in c)  # longest first
        assert len(c) * lengths[c[0]] <= cap or len(c) == 1
    # about as many micro-batches as the cap divides the padded tokens into (sorted: little
    # padding), and one example alone when it is longer than the cap
    assert len(chunks) <= 1.2 * sum(lengths[i] for i in idx) / cap + 2
    assert token_micro_batches([0, 1], [5000, 10], cap) == [[0], [1]]


def test_batch_tokens_key_is_checked():
    from repro.trainer_config import TrainerConfig

    assert TrainerConfig().batch_tokens is None  # prompt tuning: batch_size examples
    ok = TrainerConfig(batch_size=128, batch_tokens=65536)
    assert (ok.step_examples(512), ok.step_examples(128), ok.step_examples(4096)) == (128, 512, 128)
    assert TrainerConfig(batch_size=32).step_examples(128) == 32
    with pytest.raises(
        ValueError, match="batch_tokens=1000 must be a multiple of .*batch_size=128"
    ):
        TrainerConfig(batch_size=128, batch_tokens=1000)
    with pytest.raises(ValueError, match="batch_tokens must be an integer >= 1"):
        TrainerConfig(batch_tokens=0)
    with pytest.raises(ValueError, match="trainer.batching=bucketed .* trainer.batch_tokens=null"):
        TrainerConfig(batch_size=128, batch_tokens=65536, batching="bucketed")
