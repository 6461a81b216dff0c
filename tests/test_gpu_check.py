"""benchmarks/gpu_check.py on a CPU: the tiny path runs every section through the suite's code,
writes both files, fills every field, and says that no GPU figure was measured.

Not a timed test: CPU timings at tiny shapes mean nothing; what is checked is that every field
is a number, or null with a status saying why, and that the numbers agree with each other. The
issue asks that the CPU run fit the default test run's budget: it does (~20 s, one process);
only the second run (a spent budget) is ``slow``.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.estimate import Shape, count_params, step_flops

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

STEP_KEYS = {
    "section", "size", "params", "d_model", "precision", "model_dtype", "gradient_checkpointing",
    "prompt_len", "batch_size", "grad_accum", "input_tokens_mean", "target_tokens",
    "seconds_per_step", "examples_per_s", "flops_per_step", "achieved_tflops", "peak_tflops",
    "mfu", "peak_memory_bytes", "estimated_memory_bytes", "memory_ratio", "status",
}  # fmt: skip
GPU_ONLY = {"peak_tflops", "mfu", "peak_memory_bytes", "memory_ratio"}
NO_CUDA = "not measured: no CUDA device"
# the tiny shape every size is built at (gpu_check_measure.TINY_SHAPE, vocab 512, untied head)
TINY = Shape(d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2, num_decoder_layers=2,
             vocab_size=512)  # fmt: skip


def run_check(out: Path, *args: str) -> tuple[dict, str]:
    """The script in a fresh process, as a user runs it, with no GPU and no network."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NO GPU figure measured" in done.stdout
    folder = out / "cpu"
    return json.loads((folder / "gpu_check.json").read_text()), (
        folder / "gpu_check.md"
    ).read_text()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp("gpu_check"))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_the_cpu_run_says_no_gpu_figure_was_measured(tiny_run):
    result, md = tiny_run
    assert result["schema"] == 1
    assert result["gpu_measured"] is False
    assert result["shapes"] == "tiny"
    assert result["device"] == {
        "name": "cpu", "type": "cpu", "gpu": None, "memory_bytes": None, "bf16": True,
    }  # fmt: skip
    assert {"torch", "transformers", "python"} <= set(result["versions"])
    assert 0 < result["elapsed_s"] < result["budget_s"] == 420
    lengths = result["lengths"]
    assert lengths["n"] == 3270 and lengths["p50"] <= lengths["p90"] <= lengths["max"]
    assert "GPU measured: NO" in md and "No GPU figure was measured" in md


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_every_training_step_is_filled_and_consistent(tiny_run):
    result, md = tiny_run
    steps = result["steps"]
    assert [(s["section"], s["size"]) for s in steps] == [
        ("sizes", "small"), ("sizes", "base"), ("sizes", "large"), ("sizes", "xl"),
        ("xxl", "xxl"), ("precision", "base"), ("precision", "base"), ("precision", "base"),
    ]  # fmt: skip
    for s in steps:
        assert set(s) == STEP_KEYS
        assert s["status"].startswith(NO_CUDA), s
        for key in STEP_KEYS - GPU_ONLY - {"status"}:
            assert s[key] is not None, (s["section"], s["size"], key)
        assert all(s[key] is None for key in GPU_ONLY)
        # every size at the tiny shape, its LM head untied as T5.1.1's
        assert s["params"] == count_params(TINY) and s["d_model"] == 32
        assert (s["prompt_len"], s["batch_size"], s["grad_accum"]) == (100, 4, 1)
        assert close(s["examples_per_s"], s["batch_size"] / s["seconds_per_step"])
        assert close(s["achieved_tflops"], s["flops_per_step"] / s["seconds_per_step"] / 1e12)
        assert isinstance(s["flops_per_step"], int) and s["flops_per_step"] > 0
        assert isinstance(s["estimated_memory_bytes"], int) and s["estimated_memory_bytes"] > 0
        assert s["target_tokens"] == 2 and s["input_tokens_mean"] >= 2
        # one row per measurement in the table
        assert f"| {s['section']} | {s['size']} | {s['precision']} |" in md
    small, xxl = steps[0], steps[4]
    assert (xxl["model_dtype"], xxl["gradient_checkpointing"]) == ("bfloat16", True)
    assert (small["model_dtype"], small["gradient_checkpointing"]) == ("float32", False)
    # the same batches: checkpointing adds one forward to the forward + activation backward
    assert xxl["flops_per_step"] == pytest.approx(1.5 * small["flops_per_step"], abs=2)
    # between one step at the mean padded length and one at the longest input (FLOPs grow
    # faster than linearly in length: attention)
    mean = small["input_tokens_mean"]
    low = step_flops(TINY, 4, 100 + math.floor(mean), 2)
    assert low <= small["flops_per_step"] <= step_flops(TINY, 4, 100 + 32, 2)
    assert [s["precision"] for s in steps[5:]] == ["fp32", "fp32", "bf16"]  # tf32 is CUDA's


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_precision_ratios_are_the_step_times_ratios(tiny_run):
    result, _ = tiny_run
    p = result["precision_ratios"]
    times = [s["seconds_per_step"] for s in result["steps"][5:]]
    assert [p["fp32_s"], p["tf32_s"], p["bf16_s"]] == times
    assert close(p["fp32_over_bf16"], p["fp32_s"] / p["bf16_s"])
    assert close(p["tf32_over_bf16"], p["tf32_s"] / p["bf16_s"])
    assert p["status"].startswith(NO_CUDA) and p["size"] == "base"


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_packing_oom_and_decoding_are_filled_and_consistent(tiny_run):
    result, md = tiny_run
    packing = result["packing"]
    assert [(k["size"], k["pack_size"]) for k in packing] == [
        (size, k) for size in ("small", "base") for k in (1, 4, 16)
    ]
    for k in packing:
        assert k["status"].startswith(NO_CUDA)
        assert all(v is not None for v in k.values()), k
        assert close(k["examples_per_s_per_member"], k["batch_size"] / k["seconds_per_step"])
        solo = next(s for s in packing if s["size"] == k["size"] and s["pack_size"] == 1)
        assert close(
            k["speedup_vs_solo"], k["pack_size"] * solo["seconds_per_step"] / k["seconds_per_step"]
        )
    oom = result["oom"]
    assert oom["oom_caught"] is True and oom["step_completed"] is True
    assert oom["grad_accum_start"] == 1 and oom["grad_accum_end"] == 4  # over 1 of 4 "runs out"
    assert oom["memory_fraction"] is None and "simulated" in oom["status"]
    decoding = result["decoding"]
    assert all(v is not None for v in decoding.values())
    assert decoding["examples"] == 32 and decoding["status"].startswith(NO_CUDA)
    assert close(decoding["examples_per_s"], decoding["examples"] / decoding["seconds"])
    assert "| small | 16 |" in md and "simulated" in md


@pytest.mark.slow
def test_a_spent_budget_skips_every_measurement_but_keeps_the_estimates(tmp_path):
    result, md = run_check(tmp_path, "--budget-s", "0", "--only", "sizes,oom")
    sizes = [s for s in result["steps"] if s["section"] == "sizes"]
    others = [s for s in result["steps"] if s["section"] != "sizes"]
    assert {s["status"] for s in sizes} == {"skipped: time budget"}
    assert {s["status"] for s in others} == {"skipped: not in --only"}
    assert result["oom"]["status"] == "skipped: time budget"
    assert {k["status"] for k in result["packing"]} == {"skipped: not in --only"}
    assert result["decoding"]["status"] == "skipped: not in --only"
    for s in result["steps"]:  # what would have been computed is known without running it
        assert s["flops_per_step"] > 0 and s["estimated_memory_bytes"] > 0
        assert s["seconds_per_step"] is None and s["examples_per_s"] is None
    assert result["gpu_measured"] is False and "skipped: time budget" in md
