"""`python -m repro.collect.compare OLD NEW`: how many runs of a re-made frame repeat their score
(what sweeps/toy/run_all.sh ends with, issue 30 item 3)."""

import pandas as pd
import pytest

from repro.collect.compare import compare_frames, main

ROWS = [
    {"size": "toy_small", "task": "toy_review", "prompt_len": p, "seed": s, "score": 50.0 + p + s}
    for p in (1, 20)
    for s in (0, 1)
]


def test_runs_are_matched_on_their_axes_and_scores_compared_exactly():
    old = pd.DataFrame(ROWS)
    new = old.iloc[::-1].copy()  # another order: matched by axes, not by position
    new.loc[new["prompt_len"] == 20, "score"] += [0.0, 1e-9]  # one differs by a hair
    new = pd.concat([new, pd.DataFrame([{**ROWS[0], "seed": 7}])])  # one only in NEW
    result = compare_frames(old, new)
    assert result.summary() == (
        "3 of 4 runs repeat their score exactly (1 differ, 0 only in OLD, 1 only in NEW)"
    )
    assert result.differ[["prompt_len", "seed"]].values.tolist() == [["20", "0"]]
    assert not result.repeats and compare_frames(old, old).repeats


def test_a_frame_holding_a_run_twice_is_refused():
    twice = pd.DataFrame([*ROWS, ROWS[0]])
    with pytest.raises(ValueError, match="NEW holds 2 rows for 1 runs"):
        compare_frames(pd.DataFrame(ROWS), twice)


def test_the_command_prints_the_count_and_exits_by_it(tmp_path, capsys):
    pd.DataFrame(ROWS).to_csv(old := tmp_path / "old.csv", index=False)
    changed = pd.DataFrame(ROWS).assign(score=lambda f: f["score"].where(f["seed"] == 0, 0.0))
    changed.to_csv(new := tmp_path / "new.csv", index=False)
    assert main([str(old), str(old)]) == 0
    assert main([str(old), str(new)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0] == "4 of 4 runs repeat their score exactly (0 differ, 0 only in OLD, 0 only in NEW)"
    )
    assert out[1].startswith("2 of 4 runs repeat") and len(out) == 2 + 1 + 2  # header, 2 runs
    assert main([str(old), str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
