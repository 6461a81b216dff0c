"""The public Python API on the toy tasks: ``repro.evaluate.score_prompt(…, "toy_review")`` needs
no internal helper (no ``import repro.toyworld``, no data directory), offline."""

import doctest
import json
import os
import subprocess
import sys
import textwrap

import pytest

import repro.evaluate
from repro.evaluate import score_prompt


def test_score_prompt_docstring_example_runs(monkeypatch, tmp_path):
    """The documented call, exactly as written in the docstring."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    finder = doctest.DocTestFinder()
    (test,) = [t for t in finder.find(score_prompt, "score_prompt") if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=lambda text: print(text, end=""))
    assert runner.summarize(verbose=False).failed == 0
    assert (tmp_path / "cache" / "toy-data" / "toy_review" / "validation.jsonl").is_file()


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_toy_tasks_score_from_a_fresh_process_without_the_toy_world_imported(tmp_path):
    """A process that imports only the public API: the toy task is found through its entry
    point and its data are generated into the cache, not looked for on the hub."""
    script = textwrap.dedent(
        """
        import json, sys, torch
        from importlib.resources import files
        from repro.backbone import load_backbone, load_tokenizer
        from repro.evaluate import score_prompt

        assert "repro.toyworld" not in sys.modules
        toy = str(files("repro") / "toy_models" / "toy_small" / "step_500")
        backbone, tokenizer = load_backbone(toy), load_tokenizer(toy)
        out = {}
        for task in ("toy_review", "toy_fact", "toy_polarity"):
            result = score_prompt(torch.zeros(3, 16), backbone, tokenizer, task, max_examples=8)
            out[task] = result.n_examples
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "REPRO_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "toy_review": 8,
        "toy_fact": 8,
        "toy_polarity": 8,
    }
    assert sorted(p.name for p in (tmp_path / "cache" / "toy-data").iterdir()) == [
        "toy_fact",
        "toy_polarity",
        "toy_review",
    ]


def test_a_generated_task_reads_the_same_files_as_a_run(monkeypatch, tmp_path):
    """``Task.examples`` without a data_dir reads the files a run generates into its cache."""
    from repro.tasks import get_task
    from repro.tasks.base import data_dir_for, ensure_generated

    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    task = get_task("toy_review")
    run_dir = ensure_generated(task, data_dir_for(task, None, tmp_path))
    assert task.examples("validation") == task.examples("validation", run_dir)
    assert json.loads((run_dir / "validation.jsonl").read_text().splitlines()[0])["idx"] == 0
    assert repro.evaluate.score_prompt.__doc__.count(">>>") >= 5
