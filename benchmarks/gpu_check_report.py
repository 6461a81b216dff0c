"""The two files ``gpu_check.py`` writes under ``<out>/<device-slug>/``: ``gpu_check.json``
(read by ``repro.cost --calibration``) and ``gpu_check.md`` (one table row per measurement)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from repro.files import write_text_atomic

GB = 1e9


def device_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``nvidia-h100-80gb-hbm3``; ``cpu`` → ``cpu``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def write_report(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write both files (atomically: a run killed mid-write leaves the previous ones)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "gpu_check.json", out_dir / "gpu_check.md"
    write_text_atomic(paths[0], json.dumps(result, indent=1) + "\n")
    write_text_atomic(paths[1], markdown(result))
    return paths


def _num(value, digits: int = 3, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and scale == 1.0:
        return f"{value:,}"
    return (
        f"{value / scale:,.{digits}g}" if abs(value / scale) < 1 else f"{value / scale:,.{digits}f}"
    )


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(r: dict) -> str:
    d = r["device"]
    versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
    lines = [
        "# gpu_check",
        "",
        f"**Device** {d['name']} ({d['type']}{', table entry ' + d['gpu'] if d['gpu'] else ''}) · "
        f"**GPU measured: {'yes' if r['gpu_measured'] else 'NO'}** · **date** {r['date']} · "
        f"**shapes** {r['shapes']} · budget {r['budget_s']:g} s, elapsed {r['elapsed_s']:.0f} s",
        "",
        f"Versions: {versions}.",
        "",
    ]
    if not r["gpu_measured"]:
        lines += [
            "**No GPU figure was measured**: this run had no CUDA device. Times are CPU seconds at "
            "tiny shapes (they say nothing about a GPU); MFU, peak CUDA memory and the memory "
            "ratio are empty, and the out-of-memory retry was simulated.",
            "",
        ]
    L = r["lengths"]
    lines += [
        f"Input lengths: {L['source']}: n {L['n']}, mean {L['mean']}, p50 {L['p50']}, "
        f"p90 {L['p90']}, max {L['max']}.",
        "",
        "## Training steps",
        "",
        _row(
            [
                "section",
                "size",
                "precision",
                "weights",
                "ckpt",
                "batch × accum",
                "input tok (mean, padded)",
                "s/step",
                "examples/s",
                "TFLOP/step",
                "TFLOP/s",
                "MFU",
                "peak GB",
                "estimate GB",
                "peak/estimate",
                "status",
            ]
        ),
        _row(["---"] * 16),
    ]
    for s in r["steps"]:
        lines.append(
            _row(
                [
                    s["section"],
                    s["size"],
                    s["precision"],
                    s["model_dtype"],
                    "yes" if s["gradient_checkpointing"] else "no",
                    f"{s['batch_size']} × {s['grad_accum']}",
                    _num(s["input_tokens_mean"], 1),
                    _num(s["seconds_per_step"], 4),
                    _num(s["examples_per_s"], 1),
                    _num(s["flops_per_step"], 2, 1e12),
                    _num(s["achieved_tflops"], 1),
                    _num(s["mfu"], 3),
                    _num(s["peak_memory_bytes"], 2, GB),
                    _num(s["estimated_memory_bytes"], 2, GB),
                    _num(s["memory_ratio"], 3),
                    s["status"],
                ]
            )
        )
    p = r["precision_ratios"]
    lines += [
        "",
        f"## Precision ({p['size']}, fp32 weights)",
        "",
        f"s/step fp32 {_num(p['fp32_s'], 4)}, tf32 {_num(p['tf32_s'], 4)}, bf16 "
        f"{_num(p['bf16_s'], 4)}; fp32/bf16 {_num(p['fp32_over_bf16'], 3)}, tf32/bf16 "
        f"{_num(p['tf32_over_bf16'], 3)} ({p['status']})",
        "",
        "## Packing (one PackedT5 pass for every member's batch)",
        "",
        _row(
            [
                "size",
                "pack size",
                "grad_accum",
                "s/step",
                "examples/s per member",
                "speedup vs solo",
                "status",
            ]
        ),
        _row(["---"] * 7),
    ]
    for k in r["packing"]:
        lines.append(
            _row(
                [
                    k["size"],
                    k["pack_size"],
                    _num(k["grad_accum"]),
                    _num(k["seconds_per_step"], 4),
                    _num(k["examples_per_s_per_member"], 1),
                    _num(k["speedup_vs_solo"], 2),
                    k["status"],
                ]
            )
        )
    o, g = r["oom"], r["decoding"]
    lines += [
        "",
        "## Out of memory under a cap, trainer.grad_accum=auto",
        "",
        f"{o['size']}: memory fraction {_num(o['memory_fraction'], 3)}, grad_accum "
        f"{o['grad_accum_start']} → {_num(o['grad_accum_end'])}, out of memory caught: "
        f"{_num(o['oom_caught'])}, step completed: {_num(o['step_completed'])} ({o['status']})",
        "",
        "## Greedy decoding (repro.evaluate.predict, generate)",
        "",
        f"{g['size']}: {g['examples']} examples, batch {g['batch_size']}, ≤ {g['max_new_tokens']} "
        f"new tokens: {_num(g['seconds'], 3)} s, {_num(g['examples_per_s'], 1)} examples/s "
        f"({g['status']})",
        "",
    ]
    return "\n".join(lines)
