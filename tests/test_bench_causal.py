"""Smoke test of benchmarks/bench_causal.py on a tiny GPT-NeoX shape: it runs, ours and PEFT
compute the same loss, and its table has every row with positive measured ratios.

Not a timed test: a tiny model's seconds and megabytes mean nothing; what is checked is that
each side ran the same work and that the report is built from the measured numbers. Its two
memory workers are spawned processes (each imports torch, transformers and repro): ``slow``,
as the other benchmark smoke tests (tests/test_bench_smoke.py).
"""

import importlib
import json
import math
import re
import socket
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_causal.py"
D_MODEL, PROMPT_LEN = 32, 5
TINY = (
    f"--d-model {D_MODEL} --layers 2 --heads 4 --d-ff 64 --vocab 200 --batch 4 --input-len 24 "
    f"--target-len 4 --prompt-len {PROMPT_LEN} --repeats 1 --threads 1"
)
pytestmark = pytest.mark.slow

ROWS = (
    "trainable parameters",
    "loss on the batch, 1st step",
    "train step time, median of 1 (s)",
    "train step CPU time, median of 1 (s)",
    "peak RSS of a train step (MiB)",
    "of which above the built model (MiB)",
)


def no_network(*args, **kwargs):
    raise AssertionError(f"the benchmark tried to open a network connection: {args}")


def test_bench_causal_prints_one_table_of_measured_ratios(tmp_path, capsys, monkeypatch):
    # its memory workers are spawned processes: they import the script by name from sys.path
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    monkeypatch.setattr(socket.socket, "connect", no_network)
    bench = importlib.import_module("bench_causal")
    out_file = tmp_path / "causal.json"
    results = bench.main([*TINY.split(), "--out", str(out_file)])
    out = capsys.readouterr().out

    # the header: the shape, the versions, the threads
    assert "d_model 32, 2 layers, 4 heads, d_ff 64, vocab 200" in out, out
    assert re.search(r"^torch \S+, transformers \S+, peft \S+; 1 thread\(s\)", out, re.M), out

    # the table: a header, a separator, one row per figure, five cells each
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[:2] == ["| | ours | PEFT | full FT | ratio |", "|---|---|---|---|---|"], out
    cells = {}
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        assert len(row) == 5, line
        cells[row[0]] = row[1:]
    assert tuple(cells) == ROWS, out

    # only the prompt trains on both prompt-tuning sides; full fine-tuning trains every weight
    summary = results["summary"]
    total = summary["total_parameters"]
    assert summary["trainable"] == {
        "ours": PROMPT_LEN * D_MODEL,
        "peft": PROMPT_LEN * D_MODEL,
        "full_ft": total,
    }
    assert results["memory"]["full_ft"]["total"] == total  # the same model in the worker
    assert cells["trainable parameters"][:3] == [f"{PROMPT_LEN * D_MODEL:,}"] * 2 + [f"{total:,}"]

    # the same computation: ours and PEFT's loss agree, step by step, and in the worker too
    ours, peft = (float(x) for x in cells["loss on the batch, 1st step"][:2])
    assert ours == pytest.approx(peft, rel=1e-5, abs=1e-6)
    assert math.isfinite(ours) and ours > 0
    timing = results["timing"]
    assert len(timing["ours"]["losses"]) == len(timing["peft"]["losses"]) == 2  # warm-up + 1
    for a, b in zip(timing["ours"]["losses"], timing["peft"]["losses"], strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert results["memory"]["ours"]["first_loss"] == pytest.approx(ours, rel=1e-5, abs=1e-6)
    assert re.search(r"^same computation: \|loss ours − loss PEFT\| = \S+ at the 1st", out, re.M)

    # every ratio is a positive number, and it is ours over the other of the measured figures
    ratios = {}
    for label, row in cells.items():
        if row[3] != "–":
            match = re.fullmatch(r"ours/(PEFT|full FT) (\d+(?:\.\d+)?(?:e[-+]\d+)?)", row[3])
            assert match, row
            ratios[label] = float(match.group(2))
            assert ratios[label] > 0
    assert set(ratios) == set(ROWS) - {"loss on the batch, 1st step"}
    memory = results["memory"]
    assert ratios["train step time, median of 1 (s)"] == round(
        timing["ours"]["times"][0] / timing["peft"]["times"][0], 3
    )
    assert ratios["peak RSS of a train step (MiB)"] == round(
        memory["ours"]["peak_kb"] / memory["full_ft"]["peak_kb"], 3
    )
    assert ratios["of which above the built model (MiB)"] == round(
        memory["ours"]["above_loaded_kb"] / memory["full_ft"]["above_loaded_kb"], 3
    )
    for side in ("ours", "full_ft"):
        m = memory[side]
        assert m["peak_kb"] > 0 and m["rss_before_kb"] > 0 and m["step_s"] > 0

    # --out: the same figures as JSON
    assert json.loads(out_file.read_text())["summary"] == json.loads(json.dumps(summary))
