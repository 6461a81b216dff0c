"""Causal prompt tuning's cost: our PromptedCausalLM vs PEFT (step time), vs full FT (memory).

    python benchmarks/bench_causal.py                  # Pythia-160M shape, batch 4 × 128 → 16, p 20
    python benchmarks/bench_causal.py --repeats 20 --out causal.json
    python benchmarks/bench_causal.py --d-model 32 --layers 2 --heads 4 --d-ff 64 --vocab 200

One random GPT-NeoX model of Pythia-160M's shape (d_model 768, 12 layers, 12 heads, d_ff 3072,
vocab 50,304, rotary on 25 % of each head, parallel residual, untied output head: 162.3M
parameters) is built locally from its config (random weights: costs, not quality; nothing is
downloaded), and one batch: ``--batch`` random inputs of different lengths (the longest
``--input-len``) left-padded to ``--input-len``, then ``--target-len`` target tokens (eos last),
as ``repro.causal.encode_causal`` + ``collate(padding_side="left")`` give them.

- **Step time, ours vs PEFT**, in this process: ``repro.causal.PromptedCausalLM`` (a SoftPrompt
  of ``--prompt-len`` vectors in front of the frozen model) and PEFT's
  ``get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p))``,
  each on its own copy of the same weights, the same starting prompt, the same batch (PEFT gets
  ``[input; target]`` with the input's positions labelled -100, as tests/test_causal.py feeds
  it), the same optimizer on the prompt only. A step is zero_grad, forward → loss, backward,
  optimizer step, ``loss.item()``. After ``--warmup`` untimed steps each, ``--repeats`` rounds
  alternate who goes first (ours, PEFT | PEFT, ours | …) so that the machine's drift hits both;
  reported: the median wall seconds per side, their ratio ours/PEFT and the median of the
  per-round ratios.
- **Same computation**: the loss of each step on both sides. The first (before any update) must
  agree to float tolerance: our forward is PEFT's (tests/test_causal.py).
- **Peak memory, ours vs full fine-tuning** (every weight trainable, the same optimizer, the
  same batch, no prompt), each in its own spawned process, as ``bench_methods.py`` measures it:
  one warm-up step (the optimizer state exists), then the peak RSS (VmHWM, reset just before;
  Linux ≥ 4.0) of one more step, and how much of it is above the process with the model built.

Everything printed is measured in this run; ``--out FILE`` writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PYTHIA_160M = dict(d_model=768, layers=12, heads=12, d_ff=3072, vocab=50304)
PAD, EOS = 1, 0  # Pythia's tokenizer: <|padding|> = 1, <|endoftext|> = 0 (bos = eos)
SIDES = ("ours", "peft")
LABELS = {"ours": "ours", "peft": "PEFT", "full_ft": "full FT"}


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=PYTHIA_160M["d_model"])
    p.add_argument("--layers", type=int, default=PYTHIA_160M["layers"])
    p.add_argument("--heads", type=int, default=PYTHIA_160M["heads"])
    p.add_argument("--d-ff", type=int, default=PYTHIA_160M["d_ff"])
    p.add_argument("--vocab", type=int, default=PYTHIA_160M["vocab"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--input-len", type=int, default=128, help="padded input length (the longest)")
    p.add_argument("--target-len", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=20)
    p.add_argument("--repeats", type=int, default=10, help="timed steps per side (rounds)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    p.add_argument("--optimizer", choices=("adafactor", "adamw"), default="adafactor")
    p.add_argument("--lr", type=float, default=0.3, help="the paper's prompt learning rate")
    p.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = _usable_cores()
    for key in ("d_model", "layers", "heads", "d_ff", "batch", "input_len", "target_len",
                "prompt_len", "repeats", "warmup", "threads"):  # fmt: skip
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1; got {getattr(args, key)}")
    if args.d_model % args.heads:
        p.error(f"--d-model {args.d_model} is not a multiple of --heads {args.heads}")
    if args.vocab < 3:
        p.error(f"--vocab must be >= 3 (eos, pad + one word); got {args.vocab}")
    return args


# --- the shared setting: model, batch, prompt, optimizer (rebuilt the same in every process) ---


def model_config(spec: dict):
    """Pythia's GPT-NeoX config at the given shape (Pythia-160M's by default)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=spec["d_model"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        intermediate_size=spec["d_ff"],
        vocab_size=spec["vocab"],
        rotary_pct=0.25,
        max_position_embeddings=2048,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=EOS,
        eos_token_id=EOS,
    )


def build_model(spec: dict):
    """The random model, the same weights in every process (seeded init, same torch)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(spec["seed"])
    return GPTNeoXForCausalLM(model_config(spec))


def make_batch(spec: dict):
    """(input_ids, attention_mask, labels, input lengths): inputs of random lengths (the first
    the longest, ``input_len``), left-padded; targets ``target_len`` tokens, eos last."""
    import torch

    g = torch.Generator().manual_seed(spec["seed"] + 1)
    batch, width = spec["batch"], spec["input_len"]
    lengths = torch.randint(max(1, width // 4), width + 1, (batch,), generator=g)
    lengths[0] = width
    ids = torch.full((batch, width), PAD, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, width - n :] = torch.randint(2, spec["vocab"], (n,), generator=g)
        mask[i, width - n :] = 1
    labels = torch.randint(2, spec["vocab"], (batch, spec["target_len"]), generator=g)
    labels[:, -1] = EOS
    return ids, mask, labels, lengths.tolist()


def initial_prompt(spec: dict, table):
    from repro.prompts import init_prompt

    return init_prompt("random_uniform", table, spec["prompt_len"], seed=spec["seed"])


def make_optimizer(params, spec: dict):
    import torch

    if spec["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=spec["lr"])
    return torch.optim.Adafactor(params, lr=spec["lr"])


def build_side(name: str, model, spec: dict, batch):
    """One contender on ``model``: returns (step() -> loss, trainable parameter count)."""
    import torch

    ids, mask, labels, _ = batch
    if name in SIDES:
        prompt = initial_prompt(spec, model.get_input_embeddings().weight)
    if name == "ours":
        from repro.causal import PromptedCausalLM
        from repro.prompts import SoftPrompt

        tuned = PromptedCausalLM(model, SoftPrompt(prompt))
        params = tuned.trainable_parameters()

        def loss_fn():
            return tuned(ids, mask, labels)[0]

    elif name == "peft":
        from peft import PromptTuningConfig, get_peft_model

        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec["prompt_len"])
        tuned = get_peft_model(model, config)
        with torch.no_grad():
            tuned.prompt_encoder["default"].embedding.weight.copy_(prompt)
        params = [p for p in tuned.parameters() if p.requires_grad]
        # PEFT's causal input: [input; target], the loss on the target only (as the oracle test)
        full_ids = torch.cat([ids, labels.clamp(min=0)], dim=1)
        full_mask = torch.cat([mask, (labels != -100).to(mask.dtype)], dim=1)
        lm_labels = torch.cat([torch.full_like(ids, -100), labels], dim=1)

        def loss_fn():
            return tuned(input_ids=full_ids, attention_mask=full_mask, labels=lm_labels).loss

    elif name == "full_ft":  # every weight trains, no prompt: [input; target] as PEFT gets it
        tuned = model.requires_grad_(True)
        params = list(tuned.parameters())
        full_ids = torch.cat([ids, labels], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(labels)], dim=1)
        lm_labels = torch.cat([torch.full_like(ids, -100), labels], dim=1)

        def loss_fn():
            return tuned(input_ids=full_ids, attention_mask=full_mask, labels=lm_labels).loss

    else:
        raise ValueError(f"unknown side {name!r}")
    tuned.train()  # Pythia's config has no dropout: train mode changes nothing but the mode
    optimizer = make_optimizer(params, spec)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, sum(p.numel() for p in params)


def _quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


# --- step time: ours and PEFT alternating in this process -------------------------------------


def time_sides(spec: dict, batch) -> dict[str, dict]:
    import copy

    model = build_model(spec)
    steps, results = {}, {}
    for name, backbone in (("ours", model), ("peft", copy.deepcopy(model))):
        steps[name], trainable = build_side(name, backbone, spec, batch)
        results[name] = {"trainable": trainable, "losses": [], "times": [], "cpu_times": []}
    results["total"] = sum(p.numel() for p in model.parameters())
    results["attention"] = model.config._attn_implementation
    for _ in range(spec["warmup"]):
        for name in SIDES:
            results[name]["losses"].append(steps[name]())
    for round_ in range(spec["repeats"]):
        for name in SIDES if round_ % 2 == 0 else SIDES[::-1]:
            start, cpu = time.perf_counter(), time.process_time()
            loss = steps[name]()
            results[name]["times"].append(time.perf_counter() - start)
            results[name]["cpu_times"].append(time.process_time() - cpu)
            results[name]["losses"].append(loss)
    return results


# --- peak memory: ours and full FT, each in a fresh spawned process ---------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def memory_worker(spec: dict) -> dict:
    """One side in a fresh process: build, one warm-up step, the peak RSS of the next step."""
    import torch

    _quiet()
    torch.set_num_threads(spec["threads"])
    batch = make_batch(spec)
    model = build_model(spec)
    step, trainable = build_side(spec["side"], model, spec, batch)
    gc.collect()
    rss_loaded = _status_kb("VmRSS")  # the model built, the batch made, no step yet
    first_loss = step()  # warm-up: the optimizer's state and the gradients now exist
    gc.collect()
    rss_before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    return {
        "trainable": trainable,
        "total": sum(p.numel() for p in model.parameters()),
        "first_loss": first_loss,
        "rss_loaded_kb": rss_loaded,
        "rss_before_kb": rss_before,
        "peak_kb": peak,
        "above_loaded_kb": peak - rss_loaded,
        "step_s": seconds,
    }


def preload() -> None:
    """Import what a memory worker needs (before any measurement: the workers' imports run
    side by side, their steps one after the other). Both sides import the same modules, so
    their processes start from the same runtime."""
    import torch  # noqa: F401
    from transformers import GPTNeoXForCausalLM  # noqa: F401

    import repro.causal  # noqa: F401


def measure_memory(spec: dict) -> dict[str, dict]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    sides = ("ours", "full_ft")
    with contextlib.ExitStack() as stack:
        pools = {s: stack.enter_context(ProcessPoolExecutor(1, mp_context=ctx)) for s in sides}
        for future in [pools[s].submit(preload) for s in sides]:
            future.result()
        # one after the other: while one side steps, the other waits idle
        return {s: pools[s].submit(memory_worker, {**spec, "side": s}).result() for s in sides}


# --- report ------------------------------------------------------------------------------------


def summarise(timing: dict, memory: dict) -> dict:
    """The figures the table prints, every ratio computed from the measurements above."""
    ours, peft = timing["ours"], timing["peft"]
    median = {name: statistics.median(timing[name]["times"]) for name in SIDES}
    cpu = {name: statistics.median(timing[name]["cpu_times"]) for name in SIDES}
    pairs = [a / b for a, b in zip(ours["times"], peft["times"], strict=True)]
    diffs = [abs(a - b) for a, b in zip(ours["losses"], peft["losses"], strict=True)]
    full = memory["full_ft"]
    return {
        "trainable": {
            "ours": ours["trainable"],
            "peft": peft["trainable"],
            "full_ft": full["trainable"],
        },
        "total_parameters": timing["total"],
        "first_loss": {"ours": ours["losses"][0], "peft": peft["losses"][0]},
        "first_loss_diff": diffs[0],
        "max_loss_diff": max(diffs),
        "step_s": median,
        "cpu_s": cpu,
        "step_ratio": median["ours"] / median["peft"],
        "paired_step_ratio": statistics.median(pairs),
        "peak_mib": {k: memory[k]["peak_kb"] / 1024 for k in memory},
        "above_loaded_mib": {k: memory[k]["above_loaded_kb"] / 1024 for k in memory},
        "peak_ratio": memory["ours"]["peak_kb"] / full["peak_kb"],
        "above_loaded_ratio": memory["ours"]["above_loaded_kb"] / full["above_loaded_kb"],
        "trainable_ratio": ours["trainable"] / full["trainable"],
    }


def format_table(s: dict, repeats: int) -> str:
    t, m, a = s["trainable"], s["peak_mib"], s["above_loaded_mib"]
    rows = [
        (
            "trainable parameters",
            f"{t['ours']:,}",
            f"{t['peft']:,}",
            f"{t['full_ft']:,}",
            f"ours/full FT {s['trainable_ratio']:.3g}",
        ),
        (
            "loss on the batch, 1st step",
            f"{s['first_loss']['ours']:.6f}",
            f"{s['first_loss']['peft']:.6f}",
            "–",
            "–",
        ),
        (
            f"train step time, median of {repeats} (s)",
            f"{s['step_s']['ours']:.3f}",
            f"{s['step_s']['peft']:.3f}",
            "–",
            f"ours/PEFT {s['step_ratio']:.3f}",
        ),
        (
            f"train step CPU time, median of {repeats} (s)",
            f"{s['cpu_s']['ours']:.2f}",
            f"{s['cpu_s']['peft']:.2f}",
            "–",
            f"ours/PEFT {s['cpu_s']['ours'] / s['cpu_s']['peft']:.3f}",
        ),
        (
            "peak RSS of a train step (MiB)",
            f"{m['ours']:,.0f}",
            "–",
            f"{m['full_ft']:,.0f}",
            f"ours/full FT {s['peak_ratio']:.3f}",
        ),
        (
            "of which above the built model (MiB)",
            f"{a['ours']:,.0f}",
            "–",
            f"{a['full_ft']:,.0f}",
            f"ours/full FT {s['above_loaded_ratio']:.3f}",
        ),
    ]
    lines = ["| | ours | PEFT | full FT | ratio |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the report; returns every figure (what ``--out`` writes)."""
    args = parse_args(argv)
    import torch
    import transformers

    _quiet()
    spec = {k: v for k, v in vars(args).items() if k != "out"}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": importlib.metadata.version("peft"),
        "threads": args.threads,
        "load_start": os.getloadavg()[0],
    }
    try:
        batch = make_batch(spec)
        started = time.perf_counter()
        timing = time_sides(spec, batch)
        gc.collect()  # the two timed models are gone before the memory workers start
        memory = measure_memory(spec)
        info["wall_s"] = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads_before)
    info["load_end"] = os.getloadavg()[0]
    s = summarise(timing, memory)

    shape = "Pythia-160M-shaped" if all(spec[k] == v for k, v in PYTHIA_160M.items()) else "shrunk"
    print(
        f"{shape} random GPT-NeoX model: d_model {args.d_model}, {args.layers} layers, "
        f"{args.heads} heads, d_ff {args.d_ff}, vocab {args.vocab}, rotary_pct 0.25, parallel "
        f"residual, untied head ({s['total_parameters']:,} parameters; attention: {timing['attention']})"
    )
    print(
        f"batch {args.batch} × input {args.input_len} (lengths {', '.join(map(str, batch[3]))}, "
        f"left-padded) + target {args.target_len}; prompt length {args.prompt_len}; "
        f"torch.optim.{'AdamW' if args.optimizer == 'adamw' else 'Adafactor'} lr {args.lr} on "
        f"the trainable weights; {args.warmup} warm-up + {args.repeats} timed steps per side, "
        f"alternating"
    )
    print(
        f"torch {info['torch']}, transformers {info['transformers']}, peft {info['peft']}; "
        f"{args.threads} thread(s); CPU; load average (1 min) {info['load_start']:.2f} at start, "
        f"{info['load_end']:.2f} at end"
    )
    print(format_table(s, args.repeats))
    print(
        f"same computation: |loss ours − loss PEFT| = {s['first_loss_diff']:.2e} at the 1st step, "
        f"≤ {s['max_loss_diff']:.2e} over all {args.warmup + args.repeats} steps; ours rebuilt in "
        f"its memory process: loss {memory['ours']['first_loss']:.6f} at its 1st step"
    )
    print(
        f"step time ratio ours/PEFT {s['step_ratio']:.3f} (median of the per-round ratios "
        f"{s['paired_step_ratio']:.3f}); per step, ours: "
        + " ".join(f"{x:.3f}" for x in timing["ours"]["times"])
        + "; PEFT: "
        + " ".join(f"{x:.3f}" for x in timing["peft"]["times"])
    )
    print(
        "memory: each side in its own fresh spawned process; peak = VmHWM of one train step after "
        "a warm-up step (reset just before it); above the built model = peak − RSS with the model "
        f"built and no step run. The memory step took ours {memory['ours']['step_s']:.3f} s, full "
        f"FT {memory['full_ft']['step_s']:.3f} s (one step each, not interleaved: for scale only)"
    )
    results = {"args": {**spec, "out": str(args.out) if args.out else None}, "info": info}
    results.update(summary=s, timing=timing, memory=memory, input_lengths=batch[3])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.out}")
    return results


if __name__ == "__main__":
    # `repro` from this checkout even where it is not pip-installed (spawned workers inherit it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
