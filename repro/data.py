"""From examples to tensors: tokenise (with eos, truncation counted), batch by length, pad.

Padding is done per batch, not to the maximum length: batches are built from examples of
similar length (:func:`length_batches`) so that little compute goes to padding. Model tuning's
batches hold a token budget instead (``trainer.batch_tokens``, :func:`token_batches`): the
examples T5X's packed rows hold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from repro.tasks.base import Example

logger = logging.getLogger(__name__)

# Label id the T5 loss ignores (torch cross-entropy's default ignore_index).
IGNORE_INDEX = -100


@dataclass
class Encoded:
    """Token ids of a list of examples, unpadded, each ending with eos.

    Attributes:
        input_ids: Per example, encoder token ids (length <= max_input_length).
        labels: Per example, decoder target ids (length <= max_target_length).
        n_truncated_inputs: How many inputs were cut to fit ``max_input_length``.
        n_truncated_targets: How many targets were cut to fit ``max_target_length``.
    """

    input_ids: list[list[int]]
    labels: list[list[int]]
    n_truncated_inputs: int = 0
    n_truncated_targets: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    @property
    def lengths(self) -> list[int]:
        """Input lengths, what :func:`length_batches` buckets by."""
        return [len(ids) for ids in self.input_ids]


def _tokenize(
    texts: Sequence[str], tokenizer, max_length: int, eos_id: int
) -> tuple[list[list[int]], int]:
    # Tokenise without special tokens, cut to max_length - 1 and then append eos, so that a
    # truncated sequence still ends with eos (as seqio's trim-then-append-eos does).
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    truncated = sum(len(x) > max_length - 1 for x in ids)
    return [[*x[: max_length - 1], eos_id] for x in ids], truncated


@dataclass(frozen=True)
class TargetLimit:
    """How long a task's targets may be, and how many eval golds do not fit.

    Attributes:
        length: Token limit of the targets, eos included; also the generation cap.
        source: ``"config"`` (``task.max_target_length``), ``"task"`` (the task's own limit) or
            ``"data"`` (the longest train or eval gold target, plus eos).
        longest: The longest target or gold of the data, in tokens with eos.
        n_golds: Eval gold targets counted (every gold answer of every eval example).
        n_golds_over: Eval golds longer than ``length``: they can never be produced.
    """

    length: int
    source: str
    longest: int
    n_golds: int
    n_golds_over: int


def target_limit(
    train_targets: Sequence[str],
    eval_golds: Sequence[str],
    tokenizer,
    *,
    configured: int | None = None,
    task_default: int | None = None,
) -> TargetLimit:
    """The target length of a run: ``configured``, else ``task_default``, else from the data.

    Args:
        train_targets: Every training target string (one per training example).
        eval_golds: Every gold answer of the eval split (ReCoRD: all answers of each query),
            exactly as the model must produce it (with the sentinel prefix if any).
        tokenizer: The run's tokenizer.
        configured: ``task.max_target_length`` as the user set it (None = not set).
        task_default: The task's own limit (None = size from the data).
    """
    ids = tokenizer([*train_targets, *eval_golds], add_special_tokens=False)["input_ids"]
    lengths = [len(x) + 1 for x in ids]  # + eos
    gold_lengths = lengths[len(train_targets) :]
    longest = max(lengths, default=1)
    if configured is not None:
        length, source = configured, "config"
    elif task_default is not None:
        length, source = task_default, "task"
    else:
        length, source = max(longest, 2), "data"
    over = sum(n > length for n in gold_lengths)
    return TargetLimit(length, source, longest, len(gold_lengths), over)


def encode(
    examples: Sequence[Example], tokenizer, max_input_length: int, max_target_length: int
) -> Encoded:
    """Tokenises inputs and targets, appends eos, truncates to the limits (no padding).

    Args:
        examples: Formatted examples.
        tokenizer: A T5 tokenizer (``eos_token_id`` set).
        max_input_length: Token limit of the inputs, eos included.
        max_target_length: Token limit of the targets, eos included.

    Returns:
        The ids and how many inputs/targets were truncated (also logged as a warning).
    """
    for name, value in (
        ("max_input_length", max_input_length),
        ("max_target_length", max_target_length),
    ):
        if value < 2:
            raise ValueError(f"{name} must be >= 2 (one token + eos), got {value}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token; T5 sequences must end with eos")
    input_ids, n_in = _tokenize([ex.inputs for ex in examples], tokenizer, max_input_length, eos_id)
    labels, n_tg = _tokenize([ex.targets for ex in examples], tokenizer, max_target_length, eos_id)
    if n_in or n_tg:
        logger.warning(
            "truncated %d of %d inputs to %d tokens and %d targets to %d tokens",
            n_in,
            len(examples),
            max_input_length,
            n_tg,
            max_target_length,
        )
    return Encoded(input_ids, labels, n_in, n_tg)


def length_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    pool_batches: int = 16,
) -> list[list[int]]:
    """Splits example indices into batches of similar length, so that padding is small.

    Without shuffling, indices are sorted by decreasing length (the largest batch comes first,
    so an out-of-memory error shows at once). With shuffling, the epoch's random permutation
    is cut into pools of ``pool_batches * batch_size`` examples, each pool is sorted by length
    and cut into batches, and the batch order is shuffled: larger pools pad less, smaller pools
    keep batches more random (``pool_batches=1`` is plain random batching).

    Every index appears exactly once per epoch; only the last batch may be short (it is kept).
    The result depends only on (lengths, batch_size, seed, epoch), so a trainer can resume at
    (epoch, batch index).

    Returns:
        Batches of indices into ``lengths``.
    """
    if batch_size < 1 or pool_batches < 1:
        raise ValueError(
            f"batch_size and pool_batches must be >= 1, got {batch_size}, {pool_batches}"
        )
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    n = len(lengths_arr)
    if n == 0:
        return []
    if not shuffle:
        order = np.argsort(-lengths_arr, kind="stable")
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]

    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    # A multiple of batch_size, so every pool but the last splits into full batches.
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(-lengths_arr[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    # Keep the short batch last: the epoch boundary stays where plain batching has it.
    full, last = (batches[:-1], batches[-1:]) if len(batches[-1]) < batch_size else (batches, [])
    return [full[i] for i in rng.permutation(len(full))] + last


# trainer.batching → batches per length-sorted pool: "random" cuts the epoch's permutation
# straight into batches (i.i.d. batches, as T5X draws them: prompt tuning packs nothing);
# "bucketed" sorts pools of 16 batches by length first (less padding, but examples of equal
# length, e.g. one MultiRC question's answers, then tend to share a batch).
BATCHINGS = {"random": 1, "bucketed": 16}


def train_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    batching: str,
    seed: int,
    epoch: int,
    batch_tokens: int | None = None,
) -> list[list[int]]:
    """One epoch's training batches under ``trainer.batching`` (see :data:`BATCHINGS`), or with
    ``batch_tokens`` (``trainer.batch_tokens``) the examples that ``batch_size`` packed rows of
    ``batch_tokens / batch_size`` input tokens hold (:func:`token_batches`)."""
    if batching not in BATCHINGS:
        raise ValueError(f"batching={batching!r}; allowed: {', '.join(BATCHINGS)}")
    if batch_tokens is not None:
        return token_batches(
            lengths, batch_size, batch_tokens // batch_size, seed=seed, epoch=epoch
        )
    return length_batches(
        lengths,
        batch_size,
        shuffle=True,
        seed=seed,
        epoch=epoch,
        pool_batches=BATCHINGS[batching],
    )


def packed_rows(lengths: Sequence[int], order: Sequence[int], row_tokens: int) -> list[list[int]]:
    """The rows T5X's packing fills from the examples in ``order``: seqio's
    ``trim_and_pack_dataset`` (``_pack_with_tf_ops``, T5X's default) takes the examples in
    windows of ``row_tokens`` examples (its ``padded_batch`` of the longest feature length) and,
    within a window, appends each to the open row if it fits, else closes the row and opens the
    next (next-fit); a window's last row is closed with it. An example longer than a row (only
    if ``row_tokens`` is below the inputs' limit) fills one alone.

    Returns:
        Per row, its examples' indices (in ``order``'s order).
    """
    rows: list[list[int]] = []
    for start in range(0, len(order), row_tokens):
        row: list[int] = []
        used = 0
        for i in order[start : start + row_tokens]:
            n = min(int(lengths[i]), row_tokens)
            if row and used + n > row_tokens:
                rows.append(row)
                row, used = [], 0
            row.append(int(i))
            used += n
        rows.append(row)
    return rows


def token_batches(
    lengths: Sequence[int], rows: int, row_tokens: int, *, seed: int, epoch: int
) -> list[list[int]]:
    """One epoch's batches of ``rows`` packed rows of ``row_tokens`` input tokens each: the
    epoch's random permutation (the one ``trainer.batching=random`` cuts) packed as T5X packs
    (:func:`packed_rows`), then cut into batches of ``rows`` rows. A batch is the examples its
    rows hold, each trained unpadded in a row of its own: T5X's packed rows mask attention
    between their examples, so each example's loss is the one it has alone, and the step holds
    the examples a T5X step of ``rows × row_tokens`` tokens holds.

    Every index appears once per epoch (a step never crosses an epoch); only the last batch may
    hold fewer rows. The result depends only on (lengths, rows, row_tokens, seed, epoch).
    """
    if rows < 1 or row_tokens < 1:
        raise ValueError(f"rows and row_tokens must be >= 1, got {rows}, {row_tokens}")
    n = len(lengths)
    if n == 0:
        return []
    order = np.random.default_rng([seed, epoch]).permutation(n)
    packed = packed_rows(lengths, order.tolist(), row_tokens)
    return [[i for row in packed[j : j + rows] for i in row] for j in range(0, len(packed), rows)]


def token_micro_batches(
    idx: Sequence[int], lengths: Sequence[int] | Mapping[int, int], cap: int
) -> list[list[int]]:
    """A token batch's micro-batches: its examples longest first, each micro-batch as many as
    fit ``cap`` padded input tokens (count × its longest; at least one example). ``cap`` =
    ``trainer.batch_tokens / trainer.grad_accum``: what ``grad_accum`` micro-batches of fixed
    rows would hold, so the memory estimate holds; padding can ask for a few more."""
    order = sorted(idx, key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        if chunks and (len(chunks[-1]) + 1) * lengths[chunks[-1][0]] <= cap:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest member."""
    total = padded = 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        total += longest * len(batch)
        padded += sum(longest - lengths[i] for i in batch)
    return padded / total if total else 0.0


def collate(
    features: Sequence[Mapping[str, Sequence[int]]], pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pads a batch: the inputs on ``padding_side``, the labels always on the right.

    Args:
        features: Items with ``input_ids`` and optionally ``labels`` (e.g. ``Encoded[i]``).
        pad_id: The tokenizer's pad id (T5: 0).
        padding_side: "right" (T5's encoder) or "left" (a causal LM's input, so that every
            input ends where its target or generation starts: ``repro.causal``).

    Returns:
        ``input_ids`` [B, T] and ``attention_mask`` [B, T] (1 = real token), and if given,
        ``labels`` [B, L] padded with -100 so the loss ignores the padding.
    """
    if not features:
        raise ValueError("cannot collate an empty batch")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left'; got {padding_side!r}")
    longest = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
    for row, f in enumerate(features):
        ids = torch.as_tensor(f["input_ids"], dtype=torch.long)
        at = slice(0, len(ids)) if padding_side == "right" else slice(longest - len(ids), longest)
        input_ids[row, at] = ids
        attention_mask[row, at] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "labels" in features[0]:
        longest_label = max(len(f["labels"]) for f in features)
        labels = torch.full((len(features), longest_label), IGNORE_INDEX, dtype=torch.long)
        for row, f in enumerate(features):
            labels[row, : len(f["labels"])] = torch.as_tensor(f["labels"], dtype=torch.long)
        batch["labels"] = labels
    return batch
