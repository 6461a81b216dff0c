"""The cost of each tuning method, measured side by side: prompt tuning vs LoRA vs model tuning.

    python benchmarks/bench_methods.py                 # T5.1.1-small shape, CPU, batch 8
    python benchmarks/bench_methods.py --size base     # any conf/model/<size>.yaml shape

One random T5.1.1-shaped model (random weights: costs, not quality) is built in memory and
saved once; every method loads that same backbone and trains on the same batch, each in its own
fresh process so its peak memory is its own. Per method: trainable parameters, bytes stored per
task (what ``best/`` holds: prompt.safetensors, the LoRA adapter, or a full model copy), peak
memory (RSS) of a train step after one warm-up step (so the optimizer state exists; and how much
of it is above the process with the backbone loaded: optimizer state, gradients, activations,
the adapter or prompt), median step
time, and the task-switch time: with a backbone already serving, load the task's stored weights
from disk (a prompt, an adapter, a whole model) and predict a batch (one teacher-forced forward
of the batch: decoding a random model would stop at a random eos). Each also as a
ratio to model tuning (full fine-tuning).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("prompt", "lora", "model")
LABELS = {"prompt": "prompt tuning", "lora": "LoRA", "model": "model tuning"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small", help="conf/model/<size>.yaml's T5 shape")
    for key in ("d-model", "d-kv", "d-ff", "layers", "heads", "vocab"):
        p.add_argument(f"--{key}", type=int, help="override the size's shape")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--target-len", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=100, help="the paper's default")
    p.add_argument("--r", type=int, default=8, help="LoRA rank (conf/method/lora.yaml)")
    p.add_argument("--steps", type=int, default=3, help="timed train steps (after a warm-up)")
    p.add_argument("--switches", type=int, default=3, help="timed task switches")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def shape(args) -> dict[str, int]:
    from omegaconf import OmegaConf

    conf = OmegaConf.load(ROOT / "conf" / "model" / f"{args.size}.yaml")
    s = {
        "d_model": conf.d_model,
        "d_kv": conf.d_kv,
        "d_ff": conf.d_ff,
        "layers": conf.num_layers,
        "heads": conf.num_heads,
        "vocab": conf.vocab_size,
    }
    for key in s:
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    return s


def build_backbone(s: dict[str, int], out: Path) -> None:
    """A random T5.1.1-shaped model (gated GELU, untied head) saved to ``out``."""
    import torch
    from transformers import T5ForConditionalGeneration

    from repro.tiny import tiny_t5_config

    torch.manual_seed(0)
    config = tiny_t5_config(
        s["vocab"], s["d_model"], s["layers"], s["heads"], d_kv=s["d_kv"], d_ff=s["d_ff"]
    )
    model = T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(s["vocab"], s["d_model"]) * 0.05)
    model.save_pretrained(out)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def worker(spec: dict) -> dict:
    """One method, in a fresh process: train steps, what it stores, a task switch."""
    import torch

    from repro.backbone import load_backbone
    from repro.model import LoraT5, PromptedT5, TunedT5
    from repro.optim import build_prompt_optimizer
    from repro.prompts import SoftPrompt
    from repro.trainer import load_trained, save_trained
    from repro.trainer_config import OptimizerConfig

    torch.set_num_threads(spec["threads"])
    method, path = spec["method"], Path(spec["path"])
    g = torch.Generator().manual_seed(0)
    backbone = load_backbone(path)
    rss_loaded = _status_kb("VmRSS")  # the process with the backbone, before any tuning
    vocab, width = backbone.get_input_embeddings().weight.shape
    ids = torch.randint(3, vocab, (spec["batch"], spec["input_len"]), generator=g)
    labels = torch.randint(3, vocab, (spec["batch"], spec["target_len"]), generator=g)
    ids[:, -1] = labels[:, -1] = 1
    mask = torch.ones_like(ids)

    def build(bb):
        if method == "prompt":
            prompt = torch.rand(spec["prompt_len"], width, generator=g) - 0.5
            return PromptedT5(bb, SoftPrompt(prompt))
        if method == "lora":
            return LoraT5(bb, r=spec["r"], alpha=2.0 * spec["r"])
        return TunedT5(bb)

    model = build(backbone)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    optimizer = build_prompt_optimizer(
        model.trainable_parameters(), **{**vars(OptimizerConfig()), "lr": 1e-3}
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model(ids, mask, labels)
        loss.backward()
        optimizer.step()

    model.train()
    step()  # warm-up: the optimizer's state now exists
    rss_before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)
    step()
    peak_kb = _status_kb("VmHWM")
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)

    stored = path.parent / f"stored_{method}"
    stored.mkdir()
    save_trained(stored, model, step=1, sidecar={"method": method})
    stored_bytes = sum(f.stat().st_size for f in stored.iterdir() if f.suffix == ".safetensors")

    # task switch: a backbone is serving; load the next task's stored weights, predict a batch
    model.eval()
    serving = model
    if method == "model":
        del model, optimizer  # the serving copy is replaced by the task's own

    @torch.no_grad()
    def predict_batch():
        # one teacher-forced forward: the same work for every method (greedy decoding of a
        # random model stops at a random eos, a different number of steps per method)
        return serving(ids, mask, labels)[1].argmax(-1)

    def switch():
        nonlocal serving
        if method == "model":
            serving = TunedT5(load_backbone(stored)).eval()
        else:
            load_trained(stored, serving)
        return predict_batch()

    switch()  # warm-up
    switches = []
    for _ in range(spec["switches"]):
        start = time.perf_counter()
        switch()
        switches.append(time.perf_counter() - start)
    predict = []
    for _ in range(spec["switches"]):
        start = time.perf_counter()
        predict_batch()
        predict.append(time.perf_counter() - start)
    return {
        "trainable": trainable,
        "stored_bytes": stored_bytes,
        "rss_before_kb": rss_before,
        "train_kb": peak_kb - rss_loaded,
        "peak_kb": peak_kb,
        "step_s": statistics.median(times),
        "switch_s": statistics.median(switches),
        "predict_s": statistics.median(predict),
    }


def format_table(results: dict[str, dict]) -> str:
    full = results["model"]
    rows = [
        ("trainable parameters", "trainable", lambda v: f"{v:,}"),
        ("bytes stored per task", "stored_bytes", lambda v: f"{v / 2**20:,.3f} MiB"),
        ("peak RSS of a train step", "peak_kb", lambda v: f"{v / 1024:,.0f} MiB"),
        ("  of which above the loaded backbone", "train_kb", lambda v: f"{v / 1024:,.0f} MiB"),
        ("train step time (median)", "step_s", lambda v: f"{v:.3f} s"),
        ("task switch: load + predict", "switch_s", lambda v: f"{v:.3f} s"),
        ("predict a batch alone", "predict_s", lambda v: f"{v:.3f} s"),
    ]
    head = ["", *(LABELS[m] for m in METHODS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in rows:
        cells = [f"{fmt(results[m][key])} ({results[m][key] / full[key]:.3g}×)" for m in METHODS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict[str, dict]:
    args = parse_args(argv)
    s = shape(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backbone"
        build_backbone(s, path)
        spec = {
            k: v
            for k, v in vars(args).items()
            if k
            in (
                "batch",
                "input_len",
                "target_len",
                "prompt_len",
                "r",
                "steps",
                "switches",
                "threads",
            )
        }
        results = {}
        ctx = multiprocessing.get_context("spawn")
        for method in METHODS:  # one after the other, each in a fresh process
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                job = {**spec, "method": method, "path": str(path)}
                results[method] = pool.submit(worker, job).result()
    print(
        f"T5.1.1-shaped random model ({args.size}: d_model {s['d_model']}, {s['layers']}+"
        f"{s['layers']} layers, {s['heads']} heads, d_ff {s['d_ff']}, vocab {s['vocab']}; "
        f"{results['model']['trainable']:,} parameters), CPU, {args.threads} thread(s), batch "
        f"{args.batch} × input {args.input_len} / target {args.target_len}, prompt length "
        f"{args.prompt_len}, LoRA r={args.r} on q, v; Adafactor; ratio in () = method / model tuning"
    )
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
