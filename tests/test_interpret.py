"""What prompts mean (§7): nearest vocabulary tokens, the class-label share, the initial prompt
as baseline (saved in init/, or recomputed identically from the config), finished runs only,
and the notebook."""

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_notebooks import execute, stdout_of

from repro.interpret import main, nearest_tokens
from repro.rundir import locked


def test_nearest_tokens_by_cosine():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    prompt = torch.tensor([[2.0, 0.0], [0.1, 1.0]])
    ids, sims = nearest_tokens(prompt, table, k=2)
    assert ids.tolist() == [[0, 2], [1, 2]]
    assert sims[0, 0] == pytest.approx(1.0) and sims[0, 1] == pytest.approx(2**-0.5)
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        nearest_tokens(prompt, table, k=5)


@pytest.fixture
def run_copy(prompt_run, tmp_path):
    run = tmp_path / "kw-s0"
    shutil.copytree(prompt_run, run)
    return run


def test_interpret_writes_neighbours_and_label_shares_for_best_and_init(run_copy, capsys):
    assert main([str(run_copy), "-k", "3"]) == 0
    out = run_copy / "interpret"
    summary = pd.read_csv(out / "summary.csv").set_index("prompt")
    neighbours = pd.read_csv(out / "neighbours.csv")
    assert list(summary.index) == ["best", "init"] and set(summary["k"]) == {3}
    assert summary.loc["init", "init_source"] == "init/"
    assert len(neighbours) == 2 * 20 * 3  # 2 prompts x p=20 x k=3
    for name, part in neighbours.groupby("prompt"):
        hits = part.groupby("position")["is_label"].any().sum()
        assert summary.loc[name, "label_positions"] == hits
    # class-label init: position 0 is the mean embedding of 'negative''s pieces
    first = neighbours[(neighbours["prompt"] == "init") & (neighbours["position"] == 0)]
    assert first["is_label"].any()
    text = (out / "neighbours.md").read_text()
    assert "| init (init/) | 20 |" in text and "class labels: negative, positive" in text

    # a run from before init/ was saved: the same initial prompt, recomputed from its config
    shutil.rmtree(run_copy / "init")
    assert main([str(run_copy), "-k", "3", "--overwrite"]) == 0
    again = pd.read_csv(out / "neighbours.csv")
    init = neighbours[neighbours["prompt"] == "init"].reset_index(drop=True)
    pd.testing.assert_frame_equal(again[again["prompt"] == "init"].reset_index(drop=True), init)
    assert pd.read_csv(out / "summary.csv")["init_source"].iloc[1] == "recomputed from config"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory below ``root``: (size, mtime in ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


@contextlib.contextmanager
def unfinished_run(run: Path, state: str):
    """A finished run made to look, while inside, as it does while its job trains it (its lock
    held, as `repro.rundir.locked` holds it; no result.json: it is written last), after its job
    stopped before the end (no result.json, no lock), or after it failed."""
    result = run / "result.json"
    if state == "failed":
        failed = {**json.loads(result.read_text()), "status": "failed", "error": "RuntimeError: x"}
        result.write_text(json.dumps(failed))
        yield
        return
    result.unlink()
    if state == "stopped":
        yield
        return
    with locked(run) as writable:
        assert writable
        yield


STATUS = {
    "training": "is still training (status: running; in use by pid ",
    "stopped": "has no result.json (status: unfinished; stopped before its end, or its job has "
    "not written its result yet)",
    "failed": "is not a finished run (status: failed: RuntimeError: x)",
}


@pytest.mark.parametrize("state", list(STATUS))
def test_interpret_refuses_an_unfinished_run_and_writes_nothing(
    prompt_run, tmp_path, capsys, state
):
    """A run still training (or stopped, or failed) is refused in one line naming it and its
    status, before anything is read or written: no interpret/ in it, no file of it touched;
    given in a sweep beside a finished run, the whole command is refused and neither run is
    written into."""
    sweep = tmp_path / "sweep"
    done, busy = sweep / "done-s0", sweep / "busy-s0"
    shutil.copytree(prompt_run, done)
    shutil.copytree(prompt_run, busy)
    with unfinished_run(busy, state):
        before = tree(sweep)
        for paths in ([busy], [sweep], [done, busy]):
            assert main([str(p) for p in paths]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {busy} {STATUS[state]}") and err.count("\n") == 1, err
            assert "only a finished run is read" in err and "Traceback" not in err
            assert tree(sweep) == before
    assert not (busy / "interpret").exists() and not (done / "interpret").exists()
    if state == "training":  # its job ended: refused still, as stopped (no result.json)
        assert main([str(busy)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {busy} {STATUS['stopped']}")


@pytest.mark.slow  # a notebook, like tests/test_notebooks.py's
def test_prompt_neighbours_notebook_runs_headless(run_copy, tmp_path, monkeypatch):
    # a run still training: one line, nothing written into it, no error
    busy = tmp_path / "busy-s0"
    shutil.copytree(run_copy, busy)
    with unfinished_run(busy, "training"):
        before = tree(busy)
        line = stdout_of(execute("prompt_neighbours", monkeypatch, REPRO_RUN_DIR=busy)).strip()
        assert line.startswith(f"error: {busy} {STATUS['training']}") and "\n" not in line
        assert line.endswith("; give REPRO_RUN_DIR a finished run")
        assert tree(busy) == before

    nb = execute("prompt_neighbours", monkeypatch, REPRO_RUN_DIR=run_copy, REPRO_K="4")
    text = stdout_of(nb)
    assert "best: " in text and "init: " in text and "among their top-4 neighbours" in text
    assert (run_copy / "interpret/summary.csv").exists()
