"""Prompt ensembling: one batched forward over N prompts vs N separate evaluations.

    python benchmarks/bench_ensemble.py                     # toy_xl, toy_review dev, N=5
    python benchmarks/bench_ensemble.py --prompts 3 --mode rank --repeats 5
    python benchmarks/bench_ensemble.py --model /path/to/t5 --examples 256

What it prints, side by side from one run: the median wall-clock seconds (± IQR over
``--repeats``) of scoring the same examples under N prompts

- **batched**: ``repro.ensemble.predict_all`` — every example repeated N times in one batch, copy
  n behind prompt n (``MultiPromptT5``), one pass over the data;
- **separate**: N calls of ``repro.evaluate.predict`` with a ``PromptedT5`` per prompt, N passes;

timed alternately (batched, separate, batched, ...) so machine drift hits both alike, and the
ratio batched/separate. It also checks that both give every prompt the same predictions.

Both use ``--batch`` examples per forward (batched: ``--batch`` × N rows). The prompts are random
(timing does not depend on what they learned); the model is the shipped toy_xl LM-adapted
checkpoint unless ``--model`` names another T5 directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "repro" / "toy_models" / "toy_xl" / "step_500"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a T5 directory")
    parser.add_argument("--task", default="toy_review", help="a generated toy task")
    parser.add_argument("--prompts", type=int, default=5, help="N (paper: 5)")
    parser.add_argument("--prompt-len", type=int, default=20)
    parser.add_argument("--examples", type=int, default=200, help="dev examples scored")
    parser.add_argument("--batch", type=int, default=50, help="examples per forward")
    parser.add_argument("--mode", choices=("generate", "rank"), default="generate")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per side")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import repro.toyworld  # noqa: F401  (registers the toy world's tasks)
    from repro.backbone import load_backbone, load_tokenizer
    from repro.ensemble import MultiPromptT5, predict_all
    from repro.evaluate import predict
    from repro.model import PromptedT5
    from repro.prompts import SoftPrompt
    from repro.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        task.generate(Path(tmp))
        examples = task.examples(task.eval_split, tmp)[: args.examples]
    tokenizer = load_tokenizer(args.model)
    backbone = load_backbone(args.model).eval()
    ids = [tokenizer(ex.inputs).input_ids for ex in examples]
    gen = torch.Generator().manual_seed(0)
    width = backbone.config.d_model
    prompts = (torch.rand(args.prompts, args.prompt_len, width, generator=gen) - 0.5) * 2
    candidates = list(task.labels) if args.mode == "rank" else []
    batched_model = MultiPromptT5(backbone, prompts)
    singles = [PromptedT5(backbone, SoftPrompt(p)).eval() for p in prompts]

    def batched():
        return predict_all(
            batched_model, tokenizer, ids, candidates=candidates, batch_size=args.batch
        )[0]

    def separate():
        outs = [
            predict(m, tokenizer, ids, mode=args.mode, candidates=candidates, batch_size=args.batch)
            for m in singles
        ]
        return [list(row) for row in zip(*outs, strict=True)]

    times = {"batched": [], "separate": []}
    results = {}
    batched(), separate()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("separate", separate)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)

    def iqr(xs):
        if len(xs) < 2:
            return 0.0
        q = statistics.quantiles(xs, n=4)
        return q[2] - q[0]

    print(
        f"model {args.model.name if args.model != DEFAULT_MODEL else 'toy_xl/step_500'} "
        f"(d_model {width}), task {task.name}, {len(ids)} examples, N = {args.prompts} prompts "
        f"of {args.prompt_len} tokens, mode {args.mode}, {args.batch} examples per forward, "
        f"{torch.get_num_threads()} threads, {args.repeats} timed rounds"
    )
    median = {k: statistics.median(v) for k, v in times.items()}
    for name in ("batched", "separate"):
        print(f"  {name:9s} {median[name]:7.2f} s  (IQR {iqr(times[name]):.2f} s)")
    print(f"  ratio batched/separate: {median['batched'] / median['separate']:.3f}")
    same = results["batched"] == results["separate"]
    print(f"  same predictions for every prompt: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
