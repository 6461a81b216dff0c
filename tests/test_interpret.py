"""What prompts mean (§7): nearest vocabulary tokens, the class-label share, the initial prompt
as baseline (saved in init/, or recomputed identically from the config), and the notebook."""

import shutil

import pandas as pd
import pytest
import torch
from test_notebooks import execute, stdout_of

from repro.interpret import main, nearest_tokens


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


@pytest.mark.slow  # a notebook, like tests/test_notebooks.py's
def test_prompt_neighbours_notebook_runs_headless(run_copy, monkeypatch):
    nb = execute("prompt_neighbours", monkeypatch, REPRO_RUN_DIR=run_copy, REPRO_K="4")
    text = stdout_of(nb)
    assert "best: " in text and "init: " in text and "among their top-4 neighbours" in text
    assert (run_copy / "interpret/summary.csv").exists()
