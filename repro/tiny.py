"""Tiny, self-made T5 assets for tests and offline smoke runs.

Our machines cannot reach the model hub, so the suite builds what it needs itself: a
SentencePiece tokenizer trained on a small generated corpus (with byte fallback, so any text
tokenises) and a randomly initialised T5.1.1-style model (gated-GELU, relative attention,
untied embeddings) saved with ``save_pretrained``. Everything is seeded, so the same call
gives the same files.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from repro.files import build_once

# Words the generated corpus is made of: everyday words plus every SuperGLUE label word and
# feature key, so that verbalisers and class-label init see real pieces, not bytes.
CORPUS_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "from",
    "and",
    "or",
    "but",
    "not",
    "is",
    "was",
    "are",
    "were",
    "be",
    "has",
    "had",
    "it",
    "he",
    "she",
    "they",
    "we",
    "you",
    "this",
    "that",
    "these",
    "those",
    "who",
    "what",
    "which",
    "when",
    "where",
    "why",
    "how",
    "cat",
    "dog",
    "bird",
    "fish",
    "man",
    "woman",
    "child",
    "house",
    "tree",
    "car",
    "road",
    "river",
    "city",
    "book",
    "door",
    "window",
    "sat",
    "ran",
    "saw",
    "said",
    "made",
    "took",
    "gave",
    "went",
    "came",
    "found",
    "thought",
    "knew",
    "wanted",
    "big",
    "small",
    "good",
    "bad",
    "new",
    "old",
    "red",
    "blue",
    "green",
    "happy",
    "sad",
    "great",
    "awful",
    "fine",
    "poor",
    "true",
    "false",
    "yes",
    "no",
    "entailment",
    "not_entailment",
    "contradiction",
    "neutral",
    "cause",
    "effect",
    "premise",
    "hypothesis",
    "question",
    "passage",
    "paragraph",
    "answer",
    "query",
    "entities",
    "sentence1",
    "sentence2",
    "word",
    "choice1",
    "choice2",
    "question1",
    "question2",
    "context",
    "duplicate",
    "not_duplicate",
    "equivalent",
    "not_equivalent",
    "positive",
    "negative",
    "commonsense",
    "reasoning",
    "reading",
    "comprehension",
    "pronoun",
    "resolution",
    "True",
    "False",
]

PUNCTUATION = ".,:;?!'\"*-@()<>/"


def write_tiny_tokenizer(out_dir: str | os.PathLike, vocab_size: int = 400, seed: int = 0) -> Path:
    """Train a SentencePiece unigram model and save it as a T5 tokenizer in ``out_dir``.

    Ids follow T5: pad 0, eos 1, unk 2; 100 ``<extra_id_*>`` sentinels are appended by the
    tokenizer class, as in the real T5 vocabulary. Like T5's own vocabulary there is no byte
    fallback: characters never seen in the corpus become ``<unk>``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(CORPUS_WORDS) for _ in range(rng.randint(4, 16))]
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice(PUNCTUATION)

    lines = [sentence() for _ in range(3000)]
    lines += [*CORPUS_WORDS, PUNCTUATION + "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    sentencepiece_t5_tokenizer(
        lines, vocab_size, hard_vocab_limit=False, seed_sentencepiece_size=100_000
    ).save_pretrained(out_dir)
    return out_dir


def sentencepiece_t5_tokenizer(lines, vocab_size: int, num_threads: int = 1, **options):
    """A SentencePiece unigram model trained on ``lines``, as a T5 tokenizer with T5's ids (pad
    0, eos 1, unk 2, no bos, 100 ``<extra_id_*>`` sentinels on top). ``options`` go to the
    trainer as they are (e.g. ``hard_vocab_limit=False``)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=f"{tmp}/spiece",
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=num_threads,
            minloglevel=2,
            **options,
        )
        return T5Tokenizer.from_pretrained(tmp, extra_ids=100)


def tiny_t5_config(
    vocab_size: int,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    *,
    d_kv: int | None = None,
    d_ff: int | None = None,
    dropout_rate: float = 0.0,
):
    """A T5.1.1-shaped config: gated-GELU, relative attention, untied input/output embeddings.

    ``d_kv`` defaults to d_model / num_heads and ``d_ff`` to 2 × d_model (T5.1.1's ratio).
    """
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv or d_model // num_heads,
        d_ff=d_ff or 2 * d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=dropout_rate,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def write_tiny_t5(
    out_dir: str | os.PathLike,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write a random tiny T5 (weights, config, tokenizer) that ``from_pretrained`` loads."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    out_dir = Path(out_dir)
    write_tiny_tokenizer(out_dir, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(
        tiny_t5_config(len(tokenizer), d_model, num_layers, num_heads)
    )
    model.save_pretrained(out_dir)
    return out_dir


def ensure_tiny_t5(out_dir: str | os.PathLike, **kwargs) -> Path:
    """Build the tiny model once; concurrent jobs race safely (build aside, then rename)."""
    return build_once(Path(out_dir), lambda d: write_tiny_t5(d, **kwargs), marker="config.json")
