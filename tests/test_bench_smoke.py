"""Smoke test of benchmarks/bench_step.py on a tiny model: it runs and prints its ratio lines.

Not a timed test: the numbers of a tiny model on a busy machine mean nothing; what is checked is
that every contender ran, did the same work, and that the report has its two ratio lines.
The benchmarks are scripts, not the product: ``slow`` (CI runs them).
"""

import importlib.util
import re
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"
TINY = (
    "--d-model 32 --d-kv 8 --heads 2 --layers 2 --batch 2 --input-len 16 --target-len 4 "
    "--prompt-len 4 --steps 2 --warmup 1 --threads 1"
)
pytestmark = pytest.mark.slow


def load_script():
    spec = importlib.util.spec_from_file_location("bench_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", ["", "--checkpointing --ours-stock-gelu"])
def test_bench_step_runs_and_prints_the_ratio_lines(capsys, variant):
    results = load_script().main([*TINY.split(), *variant.split()])
    out = capsys.readouterr().out

    step_ratio = re.search(r"^ratio ours/PEFT step time: (\d+\.\d+)", out, re.MULTILINE)
    memory_ratio = re.search(
        r"^ratio ours/full FT peak memory: (\d+\.\d+) \(step extra only: (\d+\.\d+)\)",
        out,
        re.MULTILINE,
    )
    assert step_ratio and memory_ratio, out
    # each ratio is ours over the other of the numbers measured (not the other way round)
    times = {name: statistics.median(results[name]["times"]) for name in ("ours", "peft")}
    assert float(step_ratio.group(1)) == round(times["ours"] / times["peft"], 3)
    peak = {name: r["peak_kb"] for name, r in results.items()}
    extra = {name: r["peak_kb"] - r["rss_before_kb"] for name, r in results.items()}
    assert float(memory_ratio.group(1)) == round(peak["ours"] / peak["full_ft"], 3)
    assert float(memory_ratio.group(2)) == round(extra["ours"] / extra["full_ft"], 3)

    assert set(results) == {"ours", "peft", "full_ft"}
    # only the prompt trains on both prompt-tuning sides: p × d_model = 4 × 32
    assert results["ours"]["trainable"] == results["peft"]["trainable"] == 4 * 32
    assert results["full_ft"]["trainable"] == results["full_ft"]["total"]
    # 2 timed steps each; warm-up + timed losses agree step by step (same prompt, same dropout)
    assert len(results["ours"]["times"]) == len(results["peft"]["times"]) == 2
    assert len(results["ours"]["losses"]) == 3
    tolerance = 0.0 if "stock-gelu" in variant else 1e-5  # same modules: the very same floats
    for ours, peft in zip(results["ours"]["losses"], results["peft"]["losses"], strict=True):
        assert abs(ours - peft) <= tolerance
    # the peaks are measured: full FT's step holds at least a fp32 gradient of every weight it
    # trains beyond the loaded model (8.2 MiB here; 33 MiB measured), and ours the same as PEFT,
    # which does the same work on the same model (22-24 MiB each, within 1 %)
    assert extra["full_ft"] * 1024 >= 4 * results["full_ft"]["trainable"]
    assert 0.75 < extra["ours"] / extra["peft"] < 1.33, extra


def test_bench_batching_runs_on_tiny_data_and_prints_its_ratios(tmp_path, capsys, tiny_t5_dir):
    import json

    spec = importlib.util.spec_from_file_location(
        "bench_batching", SCRIPT.with_name("bench_batching.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        "and",
        "the",
        "dog",
        "ran",
        "to",
        "the",
        "red",
        "house",
    ]
    rows = [
        {
            "question": "is it red",
            "passage": " ".join(words[: 3 + i % 11]),
            "idx": i,
            "label": i % 2,
        }
        for i in range(40)
    ]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = f"--data-dir {tmp_path} --tokenizer {tiny_t5_dir} --quick --d-model 16 --d-kv 4 "
    args += "--heads 2 --layers 1 --batch 4 --prompt-len 2 --timed 2 --threads 1"
    results = bench.main(args.split())
    out = capsys.readouterr().out
    assert re.search(r"^ratio bucketed/random examples/s: \d+\.\d+", out, re.MULTILINE), out
    assert results["random"]["batches"] == results["bucketed"]["batches"] == 10
    # Bucketing never pads more than random batches of the same epoch.
    assert results["bucketed"]["padded"] <= results["random"]["padded"]
    assert results["random"]["timed_examples"] == results["bucketed"]["timed_examples"] == 8


def test_bench_ensemble_runs_on_the_tiny_model_and_prints_its_ratio(capsys, tiny_t5_dir):
    spec = importlib.util.spec_from_file_location(
        "bench_ensemble", SCRIPT.with_name("bench_ensemble.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for mode in ("generate", "rank"):
        args = f"--model {tiny_t5_dir} --task toy_keyword --prompts 2 --prompt-len 3 --examples 6"
        code = bench.main([*args.split(), "--batch", "4", "--repeats", "1", "--mode", mode])
        out = capsys.readouterr().out
        assert code == 0, out
        assert re.search(r"^  ratio batched/separate: \d+\.\d+$", out, re.MULTILINE), out
        assert "same predictions for every prompt: yes" in out


def test_bench_methods_prints_one_table_with_ratios_to_model_tuning(capsys, monkeypatch):
    # its workers are spawned processes: they import the script by name from sys.path
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    bench = importlib.import_module("bench_methods")
    args = (
        "--d-model 32 --d-kv 8 --d-ff 64 --heads 2 --layers 2 --vocab 200 --batch 2 "
        "--input-len 16 --target-len 4 --prompt-len 4 --r 2 --steps 1 --switches 1 --threads 1"
    )
    results = bench.main(args.split())
    out = capsys.readouterr().out
    assert set(results) == {"prompt", "lora", "model"}
    # prompt: p × d; LoRA: r · (d + heads·d_kv) for q and v of 2 + 2·2 attentions; model: all
    assert results["prompt"]["trainable"] == 4 * 32
    assert results["lora"]["trainable"] == 6 * 2 * 2 * (32 + 16)
    full = results["model"]
    assert (
        results["prompt"]["stored_bytes"] < results["lora"]["stored_bytes"] < full["stored_bytes"]
    )
    assert full["stored_bytes"] >= 4 * full["trainable"]  # a full fp32 copy
    for row in results.values():
        assert row["peak_kb"] > 0 and row["step_s"] > 0 and row["switch_s"] > 0
    assert "| trainable parameters | 128 (" in out and "model tuning |" in out
    table = [line for line in out.splitlines() if line.startswith("| ") and "×)" in line]
    assert len(table) == 7, out
    # every row's last cell (model tuning) is the unit; another method may also round to 1×
    assert all(line.endswith(" (1×) |") for line in table), out
