"""trainer.batching: random (the default, T5X's i.i.d. batches) vs bucketed, on BoolQ's lengths.

    python benchmarks/bench_batching.py                  # BoolQ validation, T5.1.1-small shape
    python benchmarks/bench_batching.py --quick          # ~1 min sanity run on a smaller model
    python benchmarks/bench_batching.py --tokenizer google/t5-v1_1-base   # T5's own pieces
    python benchmarks/bench_batching.py --toy multirun/batching_toy    # table of a toy sweep

The toy sweep behind ``--toy`` (docs/batching.md): 2 toy tasks x 3 seeds x both modes,
    python -m repro.run -m experiment=toy task=toy_review,toy_fact seed=0,1,2 \
        trainer.batching=random,bucketed sweep_name=batching_toy \
        'name=${task.name}-${model.size}-${trainer.batching}-s${seed}'

What it prints, side by side from one run:

- per mode, one epoch of the real length mix (BoolQ ``val.jsonl`` of the official SuperGLUE
  files, formatted as the suite trains on it, ``passage: … question: …``, cut at 512 tokens):
  batches, encoder positions (prompt + input, padded per batch to its longest member), padded
  positions and their share — exact counts, no timing involved;
- per mode, the measured training throughput (examples/s) of a frozen random T5 with a prompt in
  front: the same number of batches drawn at random from each mode's epoch, timed alternately
  (random, bucketed, random, ...) so machine drift hits both alike;
- the ratios bucketed/random of padded positions and of examples/s.

Without ``--tokenizer``, the lengths come from a SentencePiece unigram model (8,000 pieces)
trained on the file's own text in a temp dir: our machines have no copy of T5's vocabulary. A
user with hub access passes ``--tokenizer google/t5-v1_1-base`` to count T5's own pieces.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "superglue" / "BoolQ"
MODES = ("random", "bucketed")
# T5.1.1-small (d_model 512, d_kv 64, d_ff 1024, 8+8 layers, 6 heads).
DEFAULTS = dict(d_model=512, d_kv=64, layers=8, heads=6, batch=32, prompt_len=100, timed=8)
QUICK = dict(d_model=128, d_kv=32, layers=2, heads=4, batch=32, prompt_len=100, timed=6)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="holds val.jsonl")
    parser.add_argument("--tokenizer", default=None, help="a T5 tokenizer (hub id or dir)")
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer batches")
    parser.add_argument("--timed", type=int, help="batches timed per mode")
    parser.add_argument("--batch", type=int, help="examples per batch (paper: 32)")
    parser.add_argument("--prompt-len", type=int, help="prompt length (paper default: 100)")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--d-kv", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--max-examples", type=int, default=None, help="use the first N only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--toy", type=Path, default=None, help="print a toy sweep's table")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("timed", "batch", "prompt_len", "d_model", "d_kv", "layers", "heads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    return args


def load_inputs(data_dir: Path, max_examples: int | None) -> list[str]:
    """BoolQ validation inputs exactly as the suite formats them."""
    from repro.tasks import get_task

    if not data_dir.is_dir():
        sys.exit(f"error: --data-dir {data_dir} is not a directory (it must hold val.jsonl)")
    examples = get_task("boolq").examples("validation", data_dir)
    return [ex.inputs for ex in examples[:max_examples]]


def epoch_padding(lengths: list[int], batches: list[list[int]], prompt_len: int) -> dict:
    """Encoder positions of one epoch (prompt + input, each batch padded to its longest)."""
    positions = padded = 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        positions += (prompt_len + longest) * len(batch)
        padded += sum(longest - lengths[i] for i in batch)
    return {"batches": len(batches), "positions": positions, "padded": padded}


def time_steps(args, lengths, ids, epochs) -> dict[str, list[tuple[int, float]]]:
    """(examples, seconds) of forward + backward + Adafactor step, modes interleaved."""
    import torch
    from transformers import T5ForConditionalGeneration

    from repro.data import collate
    from repro.model import PromptedT5
    from repro.optim import build_prompt_optimizer
    from repro.prompts import SoftPrompt, init_prompt
    from repro.tiny import tiny_t5_config

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = tiny_t5_config(
        32128, args.d_model, args.layers, args.heads, d_kv=args.d_kv, dropout_rate=0.1
    )
    backbone = T5ForConditionalGeneration(config).requires_grad_(False)
    table = backbone.get_input_embeddings().weight
    model = PromptedT5(
        backbone, SoftPrompt(init_prompt("sampled_vocab", table, args.prompt_len, seed=0))
    ).train()
    device = torch.device(args.device)
    model.to(device)
    optimizer = build_prompt_optimizer(model.trainable_parameters())
    labels = [[1176, 1]] * len(lengths)  # "True" + eos: BoolQ targets are one piece

    rng = random.Random(args.seed)
    picks = {m: rng.sample(epochs[m], min(args.timed, len(epochs[m]))) for m in MODES}
    timings: dict[str, list[tuple[int, float]]] = {m: [] for m in MODES}

    def step(batch_idx: list[int]) -> float:
        batch = collate([{"input_ids": ids[i], "labels": labels[i]} for i in batch_idx], 0)
        batch = {k: v.to(device) for k, v in batch.items()}
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    step(picks["random"][0])  # warm-up, not counted
    for i in range(len(picks["random"])):
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            if i < len(picks[mode]):
                batch_idx = picks[mode][i]
                timings[mode].append((len(batch_idx), step(batch_idx)))
    return timings


def toy_table(sweep_dir: Path) -> dict:
    """Score (mean ± std over seeds) and training examples/s per toy task and mode."""
    import json

    import yaml

    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for result_file in sorted(sweep_dir.glob("*/result.json")):
        result = json.loads(result_file.read_text())
        if result.get("status") != "finished":
            continue
        trainer = yaml.safe_load((result_file.parent / "config.yaml").read_text())["trainer"]
        examples = result["steps"] * trainer["batch_size"]
        key = (result["task"], trainer.get("batching", "bucketed"))
        runs.setdefault(key, []).append((result["score"], examples / result["train_s"]))
    if not runs:
        sys.exit(f"error: no finished runs under {sweep_dir}")
    print(f"{'task':<12} {'mode':<9} {'seeds':>5} {'score':>13} {'examples/s':>10}")
    table = {}
    for (task, mode), values in sorted(runs.items()):
        scores, speeds = [v[0] for v in values], [v[1] for v in values]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        table[(task, mode)] = (statistics.mean(scores), std, statistics.mean(speeds))
        print(
            f"{task:<12} {mode:<9} {len(values):>5} "
            f"{statistics.mean(scores):>6.2f} ± {std:<5.2f} {statistics.mean(speeds):>10.1f}"
        )
    return table


def main(argv: list[str] | None = None) -> dict:
    from repro.data import train_batches
    from repro.tiny import sentencepiece_t5_tokenizer

    args = parse_args(argv)
    if args.toy is not None:
        return toy_table(args.toy)
    texts = load_inputs(args.data_dir, args.max_examples)
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        source = args.tokenizer
    else:
        tokenizer = sentencepiece_t5_tokenizer(texts, 8000, num_threads=2)
        source = "SentencePiece unigram, 8,000 pieces, trained on the file itself"
    raw = tokenizer(texts, add_special_tokens=False)["input_ids"]
    ids = [[*x[:511], 1] for x in raw]  # cut to 512 with eos, as the suite's encode()
    lengths = [len(x) for x in ids]

    epochs = {
        m: train_batches(lengths, args.batch, batching=m, seed=args.seed, epoch=0) for m in MODES
    }
    padding = {m: epoch_padding(lengths, epochs[m], args.prompt_len) for m in MODES}
    timings = time_steps(args, lengths, ids, epochs)

    print(f"data: {args.data_dir / 'val.jsonl'}: {len(lengths)} examples")
    print(f"tokenizer: {source}")
    print(
        f"input length (tokens, eos incl.): mean {statistics.mean(lengths):.1f}, "
        f"median {statistics.median(lengths):.0f}, max {max(lengths)}"
    )
    print(
        f"model: random T5.1.1 shape d_model {args.d_model}, {args.layers}+{args.layers} layers, "
        f"{args.heads} heads; prompt {args.prompt_len}; batch {args.batch}; "
        f"{args.timed} batches timed per mode on {args.device}"
    )
    print()
    header = f"{'mode':<9} {'batches':>7} {'positions/epoch':>15} {'padded/epoch':>12} "
    print(header + f"{'padded %':>8} {'examples/s':>10}")
    results = {}
    for mode in MODES:
        p = padding[mode]
        n = sum(k for k, _ in timings[mode])
        seconds = sum(s for _, s in timings[mode])
        results[mode] = {**p, "examples_per_s": n / seconds, "timed_examples": n}
        print(
            f"{mode:<9} {p['batches']:>7} {p['positions']:>15,} {p['padded']:>12,} "
            f"{100 * p['padded'] / p['positions']:>8.1f} {n / seconds:>10.2f}"
        )
    print()
    r, b = results["random"], results["bucketed"]
    print(f"ratio bucketed/random padded positions per epoch: {b['padded'] / r['padded']:.3f}")
    print(
        f"ratio bucketed/random encoder positions per epoch: {b['positions'] / r['positions']:.3f}"
    )
    print(f"ratio bucketed/random examples/s: {b['examples_per_s'] / r['examples_per_s']:.3f}")
    return results


if __name__ == "__main__":
    main()
