"""Freeze BoolQ's input lengths for ``gpu_check.py``, which then needs no data at run time.

    python benchmarks/gpu_check_lengths.py      # writes benchmarks/gpu_check_boolq_lengths.json

The lengths are those of BoolQ ``val.jsonl`` (the official SuperGLUE v1.0.2 file in
``../shared/data/superglue/BoolQ``), formatted as the suite trains on it (``passage: …
question: …``, :mod:`repro.tasks`), in tokens with eos, cut at the task's 512. These machines
hold no copy of T5's SentencePiece vocabulary, so the tokens are counted as
``benchmarks/bench_batching.py`` counts them: a SentencePiece unigram model of 8,000 pieces
trained on the file itself (:func:`repro.tiny.sentencepiece_t5_tokenizer`; 1.51 pieces per
whitespace word). T5's own 32,000-piece vocabulary is larger, so it cuts English into somewhat
fewer pieces: these lengths are an upper estimate (a 16,000-piece model gives 1.37 pieces per
word, mean 147 instead of 162). Every target is one piece + eos: ``True`` and ``False`` are one
piece each in T5's vocabulary (ids 1176 and 10747).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "superglue" / "BoolQ"
LENGTHS_FILE = HERE / "gpu_check_boolq_lengths.json"
PIECES = 8000
TARGET_TOKENS = 2  # "True" / "False" (one T5 piece each) + eos


def summary(lengths: list[int]) -> dict:
    """n, mean, p50, p90, max of a list of lengths (nearest-rank percentiles)."""
    ordered = sorted(lengths)
    n = len(ordered)
    return {
        "n": n,
        "mean": round(statistics.fmean(ordered), 1),
        "p50": ordered[(n - 1) // 2],
        "p90": ordered[min(n - 1, int(0.9 * n))],
        "max": ordered[-1],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="holds val.jsonl")
    parser.add_argument("--out", type=Path, default=LENGTHS_FILE)
    args = parser.parse_args(argv)

    from repro.tasks import get_task
    from repro.tiny import sentencepiece_t5_tokenizer

    task = get_task("boolq")
    texts = [ex.inputs for ex in task.examples("validation", args.data_dir)]
    tokenizer = sentencepiece_t5_tokenizer(texts, PIECES, num_threads=2)
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"]
    limit = task.max_input_length
    lengths = [min(len(ids) + 1, limit) for ids in pieces]  # + eos, cut as repro.data.encode
    words = sum(len(t.split()) for t in texts)
    frozen = {
        "source": f"BoolQ val.jsonl (SuperGLUE v1.0.2), {len(texts)} examples, as repro formats it",
        "tokens": (
            f"SentencePiece unigram, {PIECES} pieces trained on the file (no T5 vocabulary "
            f"offline; {sum(map(len, pieces)) / words:.2f} pieces per word: an upper estimate "
            "of T5's own count)"
        ),
        "max_input_length": limit,
        "target_tokens": TARGET_TOKENS,
        **summary(lengths),
        "lengths": lengths,
    }
    args.out.write_text(json.dumps(frozen) + "\n")
    print(f"{args.out}: {json.dumps({k: v for k, v in frozen.items() if k != 'lengths'})}")
    return frozen


if __name__ == "__main__":
    main()
