"""Train-step benchmark: our prompted T5 vs PEFT prompt tuning, and vs full fine-tuning memory.

    python benchmarks/bench_step.py            # T5.1.1-small shape, batch 32, input 256, p=100
    python benchmarks/bench_step.py --quick    # ~30 s sanity run on a smaller model

A random T5.1.1-small-shaped model is built in memory and saved once to a temp dir, so every
contender loads the same weights with ``from_pretrained``; the batch and the prompt values are
saved next to it. Each contender (ours, PEFT, full fine-tuning) lives in its own fresh worker
process, so its peak memory is its own; the parent drives the workers one step at a time and
alternates who goes first, so machine drift hits both prompt-tuning sides alike. How memory is
measured, and why, is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

CONTENDERS = ("ours", "peft", "full_ft")
LABELS = {"ours": "ours", "peft": "PEFT", "full_ft": "full FT"}

# Defaults: T5.1.1-small (d_model 512, d_kv 64, d_ff 1024, 8+8 layers, 6 heads, vocab 32,128).
DEFAULTS = dict(
    d_model=512,
    d_kv=64,
    d_ff=None,  # None = 2 × d_model, as in T5.1.1
    layers=8,
    heads=6,
    vocab=32128,
    batch=32,
    input_len=256,
    target_len=8,
    prompt_len=100,
    steps=4,  # even: as many rounds with ours first as with PEFT first
    warmup=1,
)
# --quick: a model and batch small enough for a ~30 s sanity run on 2 cores.
QUICK = dict(
    DEFAULTS, d_model=256, layers=2, heads=4, batch=8, input_len=128, prompt_len=20, steps=10
)

# glibc mallopt parameters (malloc.h) and its default ceiling of the dynamic mmap threshold.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MMAP_MAX = 32 * 1024 * 1024
MEASURE_MMAP_THRESHOLD = 64 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, ~30 s sanity run")
    parser.add_argument("--steps", type=int, help="timed steps per prompt-tuning contender")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first (≥ 1; the first is the memory step)"
    )
    parser.add_argument("--batch", type=int)
    parser.add_argument("--input-len", type=int)
    parser.add_argument("--target-len", type=int)
    parser.add_argument("--prompt-len", type=int)
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--d-kv", type=int)
    parser.add_argument("--d-ff", type=int, help="default 2 × d_model")
    parser.add_argument("--layers", type=int, help="encoder layers = decoder layers")
    parser.add_argument("--heads", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    parser.add_argument("--optimizer", choices=("sgd", "adafactor"), default="sgd")
    parser.add_argument("--attn", default=None, help="attn_implementation (default: transformers')")
    parser.add_argument(
        "--checkpointing",
        action="store_true",
        help="activation checkpointing of the backbone's blocks on both prompt-tuning sides",
    )
    parser.add_argument(
        "--ours-stock-gelu",
        action="store_true",
        help="ours with transformers' gelu_new formula (model.fused_gelu=false), to see the gain",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-full-ft", action="store_true", help="no full fine-tuning worker")
    # internal: run as a worker process driven by the parent over stdin/stdout
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.d_ff is None:
        args.d_ff = 2 * args.d_model
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    for key in ("steps", "warmup", "batch", "input_len", "target_len", "prompt_len", "d_model",
                "d_kv", "d_ff", "layers", "heads", "threads"):  # fmt: skip
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1; got {getattr(args, key)}")
    if args.vocab < 4:
        raise ValueError(f"--vocab must be >= 4 (pad, eos, unk + one word); got {args.vocab}")
    return args


def model_args(args: argparse.Namespace) -> list[str]:
    """The flags a worker needs to rebuild the same setting."""
    keys = ("batch", "input_len", "target_len", "prompt_len", "d_model", "d_kv", "d_ff",
            "layers", "heads", "vocab", "threads", "seed", "steps", "warmup")  # fmt: skip
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in keys]
    flags.append(f"--optimizer={args.optimizer}")
    if args.attn:
        flags.append(f"--attn={args.attn}")
    if args.checkpointing:
        flags.append("--checkpointing")
    if args.ours_stock_gelu:
        flags.append("--ours-stock-gelu")
    return flags


# --- assets: one checkpoint, one batch, one prompt, shared by all contenders -----------------


def write_assets(workdir: Path, args: argparse.Namespace) -> int:
    """Save a random T5.1.1-shaped model, a token batch and prompt values; returns #params."""
    import torch
    from safetensors.torch import save_file
    from transformers import T5ForConditionalGeneration

    from repro.prompts import init_prompt
    from repro.tiny import tiny_t5_config

    # transformers v5 always builds T5 tied and reads tie_word_embeddings=False only as "do not
    # scale decoder outputs" (T5.1.1); the untied lm_head of T5.1.1 is made by hand below and
    # stays untied on reload because the checkpoint holds a different tensor for it.
    config = tiny_t5_config(
        args.vocab,
        args.d_model,
        args.layers,
        args.heads,
        d_kv=args.d_kv,
        d_ff=args.d_ff,
        dropout_rate=0.1,  # T5.1.1's released config
    )
    torch.manual_seed(args.seed)
    model = T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(
        torch.randn(args.vocab, args.d_model) * args.d_model**-0.5
    )
    model.save_pretrained(workdir / "model")

    # Full-length inputs (no padding: every position is real work), eos last; ids ≥ 3 skip the
    # pad/eos/unk specials.
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(3, args.vocab, (args.batch, args.input_len), generator=gen)
    labels = torch.randint(3, args.vocab, (args.batch, args.target_len), generator=gen)
    input_ids[:, -1] = labels[:, -1] = 1
    table = model.get_input_embeddings().weight
    save_file(
        {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
            "prompt": init_prompt("random_uniform", table, args.prompt_len, seed=args.seed),
        },
        workdir / "data.safetensors",
    )
    return sum(p.numel() for p in model.parameters())


# --- worker side -----------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False if the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _glibc(function: str, *arguments: int) -> bool:
    """Call a glibc malloc tuning function; False where there is no glibc (macOS, musl)."""
    try:
        return bool(getattr(ctypes.CDLL("libc.so.6"), function)(*arguments))
    except (OSError, AttributeError):
        return False


def build_step(name: str, workdir: Path, args: argparse.Namespace):
    """Load one contender; returns (step(index) -> loss, #trainable, #total parameters)."""
    import torch
    from safetensors.torch import load_file

    from repro.backbone import load_backbone
    from repro.model import PromptedT5
    from repro.prompts import SoftPrompt

    data = load_file(workdir / "data.safetensors")
    input_ids, attention_mask, labels = data["input_ids"], data["attention_mask"], data["labels"]
    # Ours as the suite loads it (fused GELU on by default); PEFT and full FT on stock
    # transformers modules, as their users get them.
    # --checkpointing: each block recomputes its activations in backward (non-reentrant), as
    # model.gradient_checkpointing=true does; both prompt-tuning sides, never full FT.
    backbone = load_backbone(
        workdir / "model",
        attn_implementation=args.attn,
        fused_gelu=name == "ours" and not args.ours_stock_gelu,
        gradient_checkpointing=args.checkpointing and name != "full_ft",
    )

    if name == "ours":
        model = PromptedT5(backbone, SoftPrompt(data["prompt"]))
        params = model.trainable_parameters()

        def loss_fn():
            return model(input_ids, attention_mask, labels)[0]

    elif name == "peft":
        from peft import PromptTuningConfig, TaskType, get_peft_model

        model = get_peft_model(
            backbone,
            PromptTuningConfig(
                task_type=TaskType.SEQ_2_SEQ_LM,
                num_virtual_tokens=args.prompt_len,
                num_transformer_submodules=1,
            ),
        )
        weight = model.prompt_encoder["default"].embedding.weight
        with torch.no_grad():
            weight.copy_(data["prompt"])
        params = [p for p in model.parameters() if p.requires_grad]

        def loss_fn():
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    else:  # full fine-tuning: every weight trains, no prompt
        model = backbone.requires_grad_(True)
        params = list(model.parameters())

        def loss_fn():
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    model.train()  # dropout on (0.1, T5.1.1's config), as in training
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=0.3)
    else:
        optimizer = torch.optim.Adafactor(params, lr=0.3)

    def step(index: int) -> float:
        # Same seed per step index on every side: identical dropout masks, comparable losses.
        torch.manual_seed(1000 + index)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss.item()

    trainable = sum(p.numel() for p in params)
    return step, trainable, sum(p.numel() for p in model.parameters())


def worker_main(args: argparse.Namespace) -> None:
    """Serve commands from the parent: one JSON line in, one JSON line out."""
    # Keep the protocol channel clean: anything a library prints goes to stderr.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # peft's deprecation notices
    torch.set_num_threads(args.threads)

    def reply(**message: Any) -> None:
        channel.write(json.dumps(message) + "\n")

    # Import what this contender needs before telling the parent we are up, so that imports
    # overlap with the parent writing the checkpoint.
    from transformers.models.t5 import modeling_t5  # noqa: F401

    import repro.backbone
    import repro.model  # noqa: F401

    if args.worker == "peft":
        import peft  # noqa: F401
    reply(rss_runtime_kb=_status_kb("VmRSS"))

    step = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            return
        if command["cmd"] == "load":
            step, trainable, total = build_step(args.worker, Path(args.workdir), args)
            gc.collect()
            reply(rss_loaded_kb=_status_kb("VmRSS"), trainable=trainable, total=total)
            continue
        memory = command.get("memory", False)
        if memory:
            # glibc serves blocks ≥ 64 KiB with mmap and unmaps them on free, so the high-water
            # mark is what the step holds, not what the allocator keeps cached for later.
            _glibc("mallopt", M_MMAP_THRESHOLD, MEASURE_MMAP_THRESHOLD)
            gc.collect()
            rss_before = _status_kb("VmRSS")
            exact = _reset_peak_rss()
            ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step(command["index"])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        message: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu, "loss": loss}
        if memory:
            peak = _status_kb("VmHWM") if exact else None
            if peak is None:  # no resettable VmHWM: ru_maxrss (KiB on Linux, bytes on macOS)
                ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                scale = 1024 if sys.platform == "darwin" else 1
                peak = max(ru_after, ru_before) // scale
            message.update(peak_kb=peak, rss_before_kb=rss_before, exact_peak=exact)
            # Back to glibc's usual steady state for the timed steps.
            _glibc("malloc_trim", 0)
            _glibc("mallopt", M_MMAP_THRESHOLD, GLIBC_MMAP_MAX)
            _glibc("mallopt", M_TRIM_THRESHOLD, 2 * GLIBC_MMAP_MAX)
        reply(**message)


# --- parent side -----------------------------------------------------------------------------


class Worker:
    """A contender in its own process; ``call`` sends one command and waits for the answer."""

    def __init__(self, name: str, workdir: Path, args: argparse.Namespace):
        self.name = name
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
        # The worker imports `repro` from this checkout even where it is not pip-installed.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")])
        )
        cmd = [sys.executable, str(Path(__file__).resolve()), f"--worker={name}",
               f"--workdir={workdir}", *model_args(args)]  # fmt: skip
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the {self.name} worker died (exit code {code}); see stderr above")
        return json.loads(line)

    def send(self, **command: Any) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def call(self, **command: Any) -> dict:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError):
                self.call(cmd="quit")
        self.process.wait()


def run(workers: dict[str, Worker], args: argparse.Namespace) -> dict[str, dict]:
    """Drive the workers; returns per contender its load info, step times, losses and memory."""
    results = {
        name: {**w.read(), "times": [], "cpu_times": [], "losses": []}
        for name, w in workers.items()
    }
    for worker in workers.values():  # all load at once, before anything is timed
        worker.send(cmd="load")
    for name, worker in workers.items():
        results[name].update(worker.read())

    def memory_step(worker: Worker) -> None:
        answer = worker.call(cmd="step", index=0, memory=True)
        results[worker.name].update(answer)
        results[worker.name]["losses"].append(answer["loss"])

    # warm-up: the first step of each side is its memory step (fresh process, one step)
    sides = [workers["ours"], workers["peft"]]
    for worker in sides:
        memory_step(worker)
    for index in range(1, args.warmup):
        for worker in sides:
            results[worker.name]["losses"].append(worker.call(cmd="step", index=index)["loss"])
    # timed steps, the order flipped every round: AB BA AB ... (full FT waits, idle)
    for round_ in range(args.steps):
        for worker in sides if round_ % 2 == 0 else sides[::-1]:
            answer = worker.call(cmd="step", index=args.warmup + round_)
            results[worker.name]["times"].append(answer["seconds"])
            results[worker.name]["cpu_times"].append(answer["cpu_seconds"])
            results[worker.name]["losses"].append(answer["loss"])
    for worker in sides:
        worker.close()
    if "full_ft" in workers:  # alone, after the others exited: it needs the most memory
        memory_step(workers["full_ft"])
    return results


def median_iqr(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range); the IQR of fewer than 2 values is 0."""
    if len(values) < 2:
        return values[0], 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q3 - q1


def _mib(kb: int) -> float:
    return kb / 1024


def format_report(results: dict[str, dict], args: argparse.Namespace, info: dict) -> str:
    """The side-by-side table, as printed."""
    ours, peft = results["ours"], results["peft"]
    lines = [
        f"Train-step benchmark: random T5.1.1-shaped model, d_model {args.d_model}, "
        f"{args.layers}+{args.layers} layers, {args.heads} heads x d_kv {args.d_kv}, "
        f"d_ff {args.d_ff}, vocab {args.vocab} ({info['params'] / 1e6:.1f}M params)",
        f"batch {args.batch} x input {args.input_len} (+ prompt {args.prompt_len}) -> target "
        f"{args.target_len}; optimizer {args.optimizer}; {args.threads} threads; "
        f"{args.warmup} warm-up + {args.steps} timed steps per side, order alternating",
        f"torch {info['torch']}, transformers {info['transformers']}, peft {info['peft']}; "
        f"load average 1 min: {info['load_start']:.2f} at start, {info['load_end']:.2f} at end",
        f"trainable parameters: ours {ours['trainable']:,}, PEFT {peft['trainable']:,}, "
        f"full FT {results.get('full_ft', {}).get('trainable', 0):,}",
    ]
    if args.checkpointing:
        lines.append("variant: activation checkpointing on ours and PEFT (not on full FT)")
    if args.ours_stock_gelu:
        lines.append("variant: ours with transformers' gelu_new formula (model.fused_gelu=false)")
    diffs = [abs(a - b) for a, b in zip(ours["losses"], peft["losses"], strict=True)]
    lines.append(
        f"same work check: max |loss ours - loss PEFT| over {len(diffs)} steps = {max(diffs):.2e}"
    )

    lines += ["", f"{'step time (s)':<22}{'median':>10}{'IQR':>10}{'CPU s':>10}   per step (wall)"]
    for name in ("ours", "peft"):
        median, iqr = median_iqr(results[name]["times"])
        cpu = median_iqr(results[name]["cpu_times"])[0]
        steps = " ".join(f"{t:.2f}" for t in results[name]["times"])
        lines.append(f"  {LABELS[name]:<20}{median:>10.3f}{iqr:>10.3f}{cpu:>10.2f}   {steps}")
    ratio = median_iqr(ours["times"])[0] / median_iqr(peft["times"])[0]
    paired = [a / b for a, b in zip(ours["times"], peft["times"], strict=True)]
    paired_median, paired_iqr = median_iqr(paired)
    lines.append(
        f"ratio ours/PEFT step time: {ratio:.3f} (per-round pairs: median {paired_median:.3f}, "
        f"IQR {paired_iqr:.3f})  goal <= 1.0: {'met' if ratio <= 1.0 else 'NOT met'}"
    )

    lines += [
        "",
        f"{'peak memory (MiB)':<22}{'runtime':>10}{'loaded':>10}{'step peak':>12}{'step extra':>12}",
    ]
    names = [n for n in CONTENDERS if n in results]
    for name in names:
        r = results[name]
        lines.append(
            f"  {LABELS[name]:<20}{_mib(r['rss_runtime_kb']):>10.0f}{_mib(r['rss_loaded_kb']):>10.0f}"
            f"{_mib(r['peak_kb']):>12.0f}{_mib(r['peak_kb'] - r['rss_before_kb']):>12.0f}"
        )
    if "full_ft" in results:
        full = results["full_ft"]
        peak_ratio = ours["peak_kb"] / full["peak_kb"]
        extra_ratio = (ours["peak_kb"] - ours["rss_before_kb"]) / (
            full["peak_kb"] - full["rss_before_kb"]
        )
        lines.append(
            f"ratio ours/full FT peak memory: {peak_ratio:.3f} (step extra only: {extra_ratio:.3f})"
            f"  goal <= 0.5: {'met' if peak_ratio <= 0.5 else 'NOT met'}"
        )
    if not all(results[n].get("exact_peak", False) for n in names):
        lines.append(
            "note: no resettable VmHWM here; peaks are ru_maxrss (include load-time peaks)"
        )
    lines.append(
        "step time = wall seconds (the goal's measure); CPU s = median process CPU seconds of the "
        "same steps (user + sys, all threads), less sensitive to other jobs on the machine"
    )
    lines.append(
        "runtime = RSS after imports; loaded = + weights and batch; step peak = process high-water "
        "mark during one step (fresh process, glibc told to unmap freed blocks >= 64 KiB); "
        "step extra = peak - RSS just before the step"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Run the benchmark and print the report; returns the raw per-contender results."""
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return {}

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    info = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": importlib.metadata.version("peft"),  # importing it is slow
        "load_start": os.getloadavg()[0],
    }
    names = CONTENDERS if not args.skip_full_ft else CONTENDERS[:2]
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        # workers start first: they import torch & co. while the checkpoint is being written
        workers = {name: Worker(name, Path(tmp), args) for name in names}
        try:
            info["params"] = write_assets(Path(tmp), args)
            results = run(workers, args)
        finally:
            for worker in workers.values():
                worker.close()
    info["load_end"] = os.getloadavg()[0]
    print(format_report(results, args, info), flush=True)
    return results


if __name__ == "__main__":
    main()
