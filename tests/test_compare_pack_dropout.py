"""The statistics of benchmarks/compare_pack_dropout.py on synthetic pairs (no training; seconds).

The exact sign-flip test must detect a real shift, not flag pairs without one (at its nominal
rate), and give the exact p-values small cases can be counted by hand.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_pack_dropout.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_pack_dropout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exact_p_values_counted_by_hand(compare):
    # all 15 differences positive: only the observed pattern and its mirror are as extreme
    mean, p = compare.sign_flip_test([0.5] * 15)
    assert mean == 0.5 and p == 2 / 2**15
    # 3 pairs (1, 2, 3): |mean| >= 2 for +++ and --- only; 2 of 8
    assert compare.sign_flip_test([1.0, 2.0, 3.0]) == (2.0, 0.25)
    # nothing differs (saturated scores): every pattern is as extreme
    assert compare.sign_flip_test([0.0] * 15) == (0.0, 1.0)
    # differences that cancel exactly
    assert compare.sign_flip_test([0.1, -0.1, 0.2, -0.2])[1] == 1.0


def test_a_real_shift_is_detected(compare):
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, size=15)
    _, p_null = compare.sign_flip_test(noise - noise.mean())  # centred: no shift at all
    _, p_shift = compare.sign_flip_test(noise - noise.mean() + 1.5)  # a shift of 1.5 noise std
    assert p_null > 0.5
    assert p_shift < 0.001
    # power: a shift of one noise std is found in most of 40 draws of 15 pairs
    found = sum(compare.sign_flip_test(rng.normal(1.0, 1.0, 15))[1] < 0.05 for _ in range(40))
    assert found >= 30


def test_no_shift_is_flagged_at_most_at_the_nominal_rate(compare):
    rng = np.random.default_rng(1)
    draws = 300
    flagged = sum(compare.sign_flip_test(rng.normal(0.0, 1.0, 10))[1] < 0.05 for _ in range(draws))
    # the exact test's rate is <= 5 % by construction; allow the binomial spread of 300 draws
    assert flagged <= 0.05 * draws + 3 * np.sqrt(draws * 0.05 * 0.95)


def test_zero_pairs_are_left_out_and_many_pairs_are_drawn_at_random(compare):
    # zeros change no pattern: 25 pairs of which 3 differ are the exact test of those 3
    d = [0.0] * 22 + [1.0, 2.0, 3.0]
    assert compare.sign_flip_test(d) == (6.0 / 25, 0.25)
    # 21 non-zero pairs: random patterns, within Monte Carlo error of every pattern enumerated
    x = np.random.default_rng(3).normal(0.4, 1.0, 21)
    signs = 1.0 - 2.0 * ((np.arange(2**21)[:, None] >> np.arange(21)) & 1)
    exact = float(np.mean(np.abs(signs @ x) >= abs(x.sum()) - 1e-9))
    mean, p = compare.sign_flip_test(x)
    assert mean == pytest.approx(x.mean()) and 0.001 < exact < 0.5
    assert p == pytest.approx(exact, abs=0.002)


def test_bad_input_is_refused(compare):
    with pytest.raises(ValueError, match="non-empty"):
        compare.sign_flip_test([])


def test_report_pairs_runs_and_tests_each_quantity(compare, capsys):
    rng = np.random.default_rng(2)

    def run(score, loss):
        return {"score": score, "best_step": 50, "last_dev": score, "final_loss": loss}

    solo, packed = {}, {}
    for p in (1, 5, 20, 100, 150):
        for seed in (0, 1, 2):
            loss = float(rng.uniform(0.3, 0.6))
            solo[(p, seed)] = run(100.0, loss)
            packed[(p, seed)] = run(100.0, loss + 0.05)  # the same score, a higher loss
    tests = compare.report(solo, packed, timing=None)
    out = capsys.readouterr().out

    assert tests["score"]["p"] == 1.0 and tests["score"]["mean"] == 0.0  # saturated: no info
    assert tests["final_loss"]["p"] == 2 / 2**15
    assert tests["final_loss"]["mean"] == pytest.approx(0.05)
    assert "15 pairs" in out and "cannot" in out
    with pytest.raises(SystemExit) as refused:
        compare.report(solo, {k: v for k, v in packed.items() if k != (1, 0)}, timing=None)
    assert refused.value.code == 2 and "different jobs" in capsys.readouterr().err


def test_read_mode_pairs_the_run_dirs_of_two_sweeps(compare, tmp_path, capsys):
    """`--read` reads result.json and metrics.jsonl of <root>/multirun/{solo,packed}/."""
    for side, shift in (("solo", 0.0), ("packed", 0.01)):
        for p in (1, 20):
            for seed in (0, 1):
                run_dir = tmp_path / "multirun" / side / f"toy_fact-p{p}-s{seed}"
                run_dir.mkdir(parents=True)
                result = {"status": "finished", "size": "toy_large", "prompt_len": p,
                          "seed": seed, "task": "toy_fact", "best_step": 50,
                          "metrics": {"accuracy": 53.0}, "score": 53.0, "train_s": 1.0}  # fmt: skip
                (run_dir / "result.json").write_text(json.dumps(result))
                lines = [
                    {"kind": "train", "step": 50, "loss": 0.9},
                    {"kind": "eval", "step": 50, "accuracy": 53.0, "score": 53.0},
                    {"kind": "train", "step": 100, "loss": 0.4 + 0.1 * seed + shift},
                    {"kind": "eval", "step": 100, "accuracy": 51.0, "score": 51.0},
                ]
                (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    tests = compare.main(["--read", "--root", str(tmp_path)])
    out = capsys.readouterr().out

    assert "| 20 | 1 | 53.0 / 53.0 | 50 / 50 | 51.0 / 51.0 | 0.5000 / 0.5100 | +0.0100 |" in out
    assert tests["final_loss"]["mean"] == pytest.approx(0.01)
    assert tests["final_loss"]["p"] == 2 / 2**4
    assert tests["last_dev"]["p"] == 1.0

    with pytest.raises(SystemExit) as refused:
        compare.main(["--read", "--root", str(tmp_path / "nothing")])
    assert refused.value.code == 2 and "no sweep directory" in capsys.readouterr().err
