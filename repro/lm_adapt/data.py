"""The prefix-LM data: T5's ``prefix_lm`` examples of a document, fixed-length batches, and the
corpus (a local file or streamed C4) read as a resumable stream of examples per rank.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from repro.lm_adapt.config import LMAdaptConfig

# T5's prefix_lm preprocessor works on one random chunk of at most this many tokens per document
# (`select_random_chunk(max_length=65536)`); longer C4 documents are rare.
MAX_CHUNK = 65_536
IGNORE_INDEX = -100


@dataclass(frozen=True)
class PrefixLMExample:
    """One example: ``inputs`` = prefix + [eos], ``targets`` = continuation + [eos]."""

    inputs: list[int]
    targets: list[int]


def prefix_lm_examples(
    token_ids: Sequence[int],
    rng: random.Random,
    *,
    input_length: int,
    target_length: int,
    eos_id: int,
) -> list[PrefixLMExample]:
    """T5's ``prefix_lm`` on one tokenised document.

    As T5: one random chunk of at most ``MAX_CHUNK`` tokens; cut into segments of
    ``input_length - 1`` tokens (room for eos); each segment of length L split at a point drawn
    uniformly from [1, L-1] (L = 1: all to the target). A continuation longer than
    ``target_length - 1`` is cut (T5 trims too); with ``target_length >= input_length - 1`` no
    token is lost, so prefix + continuation of every segment is the segment.

    Returns:
        Examples with ``len(inputs) <= input_length`` and ``len(targets) <= target_length``.
    """
    ids = list(token_ids)
    if len(ids) > MAX_CHUNK:
        start = MAX_CHUNK * rng.randrange(math.ceil(len(ids) / MAX_CHUNK))
        ids = ids[start : start + MAX_CHUNK]
    segment = input_length - 1
    examples = []
    for begin in range(0, len(ids), segment):
        piece = ids[begin : begin + segment]
        split = rng.randint(min(1, len(piece) - 1), len(piece) - 1)
        continuation = piece[split:][: target_length - 1]
        examples.append(PrefixLMExample([*piece[:split], eos_id], [*continuation, eos_id]))
    return examples


def collate_fixed(
    examples: Sequence[PrefixLMExample], input_length: int, target_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad to the fixed lengths (static shapes on every step and device).

    Returns:
        ``input_ids`` and ``attention_mask`` [B, input_length], ``labels`` [B, target_length]
        (padding = -100, ignored by the loss).
    """
    n = len(examples)
    input_ids = torch.full((n, input_length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, input_length), dtype=torch.long)
    labels = torch.full((n, target_length), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(examples):
        input_ids[row, : len(ex.inputs)] = torch.tensor(ex.inputs)
        attention_mask[row, : len(ex.inputs)] = 1
        labels[row, : len(ex.targets)] = torch.tensor(ex.targets)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- the corpus -------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Documents by global index; ``open_pass(skip)`` iterates one pass from document ``skip``."""

    name: str
    open_pass: Callable[[int], Iterator[str]]
    size: int | None  # None: a stream too large to wrap around (C4 en: 365M documents)


def _read_local(path: Path, skip: int) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(islice(f, skip, None), start=skip + 1):
            if path.suffix == ".txt":
                yield line.rstrip("\n")
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{path} line {number} is not a JSON object with a 'text' field"
                ) from None
            yield text


def open_corpus(cfg: LMAdaptConfig) -> Corpus:
    """The local corpus (counted once, so it can wrap around) or the streamed hub dataset."""
    if cfg.corpus is not None:
        path = Path(cfg.corpus).expanduser()
        with open(path, encoding="utf-8") as f:
            size = sum(1 for _ in f)
        if size == 0:
            raise ValueError(f"lm_adapt.corpus={cfg.corpus} holds no documents")
        return Corpus(str(path), lambda skip: _read_local(path, skip), size)

    def stream(skip: int) -> Iterator[str]:
        import datasets

        ds = datasets.load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.split, streaming=True)
        for record in ds.skip(skip) if skip else ds:
            yield record["text"]

    return Corpus(f"{cfg.dataset}:{cfg.dataset_config}:{cfg.split}", stream, None)


def read_documents(corpus: Corpus, start: int, rank: int, world: int) -> Iterator[tuple[int, str]]:
    """(global index, text) of documents ``start, start+1, ...`` that belong to ``rank``.

    Rank r of W reads every W-th document (index % W == r); a local corpus wraps around (the
    index keeps growing, so the next pass draws new split points).
    """
    index = start
    while True:
        offset = index % corpus.size if corpus.size else index
        yielded = False
        for text in corpus.open_pass(offset):
            yielded = True
            if index % world == rank:
                yield index, text
            index += 1
        if corpus.size is None:
            raise ValueError(f"the corpus {corpus.name} ran out after {index} documents")
        if not yielded and offset == 0:
            raise ValueError(f"the corpus {corpus.name} holds no documents")


def example_rng(seed: int, index: int) -> random.Random:
    """The split points of document ``index`` depend on (seed, index) only: resumable anywhere."""
    return random.Random(f"lm_adapt-{seed}-{index}")  # str seeds hash the same in every process


class ExampleStream:
    """Prefix-LM examples of one rank, and where it stands: ``position = [document, taken]``.

    ``position`` = resume at document ``document`` having used ``taken`` of its examples; it is
    what ``last/`` stores (one per rank), so a resumed run draws exactly the same examples.
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer,
        cfg: LMAdaptConfig,
        *,
        position: Sequence[int] = (0, 0),
        rank: int = 0,
        world: int = 1,
    ):
        self.position = [int(position[0]), int(position[1])]
        self._examples = self._generate(corpus, tokenizer, cfg, rank, world)

    def _generate(self, corpus, tokenizer, cfg, rank, world):
        start, skip = self.position
        for index, text in read_documents(corpus, start, rank, world):
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            examples = prefix_lm_examples(
                ids,
                example_rng(cfg.seed, index),
                input_length=cfg.input_length,
                target_length=cfg.target_length,
                eos_id=tokenizer.eos_token_id,
            )
            first = skip if index == start else 0
            for k in range(first, len(examples)):
                yield index, k, examples[k]

    def take(self, n: int) -> list[PrefixLMExample]:
        out = []
        for index, k, example in islice(self._examples, n):
            out.append(example)
            self.position = [index, k + 1]
        return out
