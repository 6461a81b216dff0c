"""Packed training steps: k prompts in one pass vs k solo steps, for pack sizes 1, 2, 5, 15.

    python benchmarks/bench_pack.py                       # CPU, the shipped toy_xl backbone
    python benchmarks/bench_pack.py --quick               # ~1 min sanity run
    python benchmarks/bench_pack.py --device cuda --model small   # T5.1.1-Small-shaped, random
    python benchmarks/bench_pack.py --device cuda --model base    # T5.1.1-Base-shaped, random

For each pack size k, k members (prompt lengths cycling through ``--prompt-lens``, each with its
own random batch of ``--batch`` examples) take one training step either **solo** — k steps of
``repro.model.PromptedT5``, one per member, one after the other — or **packed** — one step of
``repro.packed_trainer.PackedT5`` over the k batches concatenated — each with its own Adafactor
(repro/optim.py). Each (k, mode) runs in a fresh worker process, so its peak memory is its own
(CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS, the backbone
included); the times come from one more worker that alternates solo and packed steps (who goes
first alternates too), so machine drift hits both alike. It prints the median
step time, examples/s per member, peak memory and the ratio packed / solo per example
(goal on CPU: ≤ 1.05). ``--equal`` gives every member the same prompt length (no prompt padding:
the pure cost of packing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # T5.1.1 shapes (config.json of google/t5-v1_1-*); vocab 32,128
    "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6, vocab_size=32128),
    "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12, vocab_size=32128),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument(
        "--model", default="toy_xl", help="toy_xl (shipped), small, base (random weights)"
    )
    p.add_argument("--sizes", default="1,2,5,15", help="pack sizes")
    p.add_argument(
        "--prompt-lens", default="1,5,20,100,150", help="members' prompt lengths, cycled"
    )
    p.add_argument("--equal", type=int, default=None, help="every member this prompt length")
    p.add_argument("--batch", type=int, default=16, help="examples per member (toy: 16, paper: 32)")
    p.add_argument("--input-len", type=int, default=48)
    p.add_argument("--target-len", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="sizes 1,2,5; 3 steps")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def backbone_dir(args, tmp: Path) -> Path:
    if args.model == "toy_xl":
        path = ROOT / "repro" / "toy_models" / "toy_xl" / "step_500"
        return path if path.exists() else ROOT / "repro" / "toy_models" / "toy_xl"
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        **SHAPES[args.model],
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        decoder_start_token_id=0,
    )
    out = tmp / args.model
    T5ForConditionalGeneration(config).save_pretrained(out)
    return out


def worker(spec: dict) -> dict:
    """One (pack size, mode) measurement in this process."""
    import torch

    from repro.backbone import load_backbone
    from repro.model import PromptedT5
    from repro.optim import build_prompt_optimizer
    from repro.packed_trainer import PackedT5, pack_batch
    from repro.prompts import SoftPrompt

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    backbone = load_backbone(spec["path"]).to(device)
    backbone.eval()  # dropout off: the same work in both modes
    vocab, width = backbone.get_input_embeddings().weight.shape
    g = torch.Generator().manual_seed(0)
    members = []
    for i, p in enumerate(spec["prompt_lens"]):
        lengths = torch.randint(
            spec["input_len"] // 2, spec["input_len"] + 1, (spec["batch"],), generator=g
        )
        ids = torch.randint(3, min(vocab, 500), (spec["batch"], spec["input_len"]), generator=g)
        mask = (torch.arange(spec["input_len"]) < lengths[:, None]).long()
        labels = torch.randint(3, min(vocab, 500), (spec["batch"], spec["target_len"]), generator=g)
        prompt = SoftPrompt(torch.rand(p, width, generator=g) - 0.5).to(device)
        batch = {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}
        optimizer = build_prompt_optimizer([prompt.weight])
        members.append((i, prompt, batch, optimizer))
    packed = PackedT5(backbone, [m[1] for m in members])
    packed_batch = {
        k: v.to(device) for k, v in pack_batch([(i, b) for i, _, b, _ in members], 0).items()
    }
    solo_batches = [{k: v.to(device) for k, v in b.items()} for _, _, b, _ in members]

    def step(mode: str) -> list[float]:
        """One step of every member; returns each member's loss."""
        for *_, opt in members:
            opt.zero_grad(set_to_none=True)
        if mode == "packed":
            b = packed_batch
            losses = packed(b["input_ids"], b["attention_mask"], b["labels"], b["member"])
            sum(losses.values()).backward()
            values = [losses[i].item() for i, *_ in members]
        else:
            values = []
            for (_, prompt, _, _), b in zip(members, solo_batches, strict=True):
                loss, _ = PromptedT5(backbone, prompt)(
                    b["input_ids"], b["attention_mask"], b["labels"]
                )
                loss.backward()
                values.append(loss.item())
        for *_, opt in members:
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return values

    if spec["mode"] != "time":  # memory: one mode alone in this process (its first step)
        losses = step(spec["mode"])
        if device.type == "cuda":
            return {"peak_bytes": torch.cuda.max_memory_allocated(), "losses": losses}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"peak_bytes": peak, "losses": losses}
    # time: both modes in this process, alternating who goes first, after one warm-up each
    step("solo"), step("packed")
    times = {"solo": [], "packed": []}
    for i in range(spec["steps"]):
        for mode in ("solo", "packed") if i % 2 == 0 else ("packed", "solo"):
            start = time.perf_counter()
            step(mode)
            times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    sizes = [1, 2, 5] if args.quick else [int(x) for x in args.sizes.split(",")]
    steps = 3 if args.quick else args.steps
    lens = [int(x) for x in args.prompt_lens.split(",")]
    gpu_note = "" if args.device == "cpu" else "  [--device cuda: run where a GPU exists]"
    with tempfile.TemporaryDirectory() as tmp:
        path = backbone_dir(args, Path(tmp))
        print(
            f"bench_pack: model {args.model} ({path.name}), device {args.device}, batch "
            f"{args.batch}/member, input ≤{args.input_len}, target {args.target_len}, "
            f"{steps} timed steps, {args.threads} threads, load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores{gpu_note}"
        )
        # step s: every member takes one step (solo: k steps one after the other)
        print(f"{'k':>3} {'mode':>7} {'step s':>8} {'ex/s/member':>12} {'peak MB':>9}  prompts")
        rows = {}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}

        def run(spec: dict) -> dict:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            return json.loads(out.stdout.strip().splitlines()[-1])

        for k in sizes:
            prompt_lens = (
                [args.equal] * k if args.equal else [lens[i % len(lens)] for i in range(k)]
            )
            spec = dict(
                path=str(path), device=args.device, prompt_lens=prompt_lens, batch=args.batch,
                input_len=args.input_len, target_len=args.target_len, steps=steps,
                threads=args.threads,
            )  # fmt: skip
            times = run({**spec, "mode": "time"})
            for mode in ("solo", "packed"):
                r = {"step_s": times[mode], **run({**spec, "mode": mode})}
                rows[k, mode] = r
                print(
                    f"{k:>3} {mode:>7} {r['step_s']:>8.3f} {args.batch / r['step_s']:>12.1f} "
                    f"{r['peak_bytes'] / 1e6:>9.0f}  {','.join(map(str, prompt_lens))}{gpu_note}",
                    flush=True,
                )
        print("\nratio packed / solo, time per example (goal on CPU ≤ 1.05); memory packed / solo")
        for k in sizes:
            solo, packed = rows[k, "solo"], rows[k, "packed"]
            print(
                f"  k={k:>2}: time {packed['step_s'] / solo['step_s']:.3f}   "
                f"memory {packed['peak_bytes'] / solo['peak_bytes']:.2f}{gpu_note}"
            )
        print("same work: the first step's loss of every member, packed vs solo")
        for k in sizes:
            pairs = zip(rows[k, "packed"]["losses"], rows[k, "solo"]["losses"], strict=True)
            print(f"  k={k:>2}: max |packed - solo| = {max(abs(a - b) for a, b in pairs):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
