"""``python -m repro.run --help`` is the suite's own short help, and a mistyped key or option gets
a "did you mean" from what Hydra knows (the keys at its level, the group's options)."""

import importlib.util
import re

import pytest
from test_bad_input import run_cli

from repro.cli import did_you_mean

COMMANDS = (
    "run",
    "collect",
    "plots",
    "cost",
    "tables",
    "ensemble",
    "transfer",
    "interpret",
    "export",
    "toyworld",
    "lm_adapt",
)


def test_help_names_every_command_once_the_groups_and_where_to_go_next(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "--help")
    assert code == 0, err
    assert "Powered by Hydra" not in out  # not Hydra's stock text
    listed = re.findall(r"^  python -m repro\.(\w+) ", out, flags=re.MULTILINE)
    assert listed == list(COMMANDS)
    for name in listed:  # each one a command that exists
        assert importlib.util.find_spec(f"repro.{name}") is not None, name
    assert "method: lora, model, model_multitask, prompt" in out.splitlines()
    assert any(line.startswith("task: boolq, cb, copa") for line in out.splitlines())
    for pointer in ("--cfg job", "--hydra-help", "README.md"):
        assert pointer in out
    assert len(out.splitlines()) < 40  # short


TYPOS = [
    (["promt_len=5"], "; did you mean 'prompt_len'?"),  # a top-level key
    (["trainer.stpes=3"], "; did you mean 'trainer.steps'?"),  # a nested key
    (["trainer.optimizer.lrr=0.1"], "; did you mean 'trainer.optimizer.lr'?"),
    (["model=bsae"], "; did you mean 'base'?"),  # a group's option
    (["init=class_labl"], "; did you mean 'class_label'?"),
    (["modle=base"], "; did you mean 'model'?"),  # a group's name
    (["task.eval_mode=genrate"], "; did you mean 'generate'?"),  # a checked value
]


@pytest.mark.parametrize(("args", "hint"), TYPOS, ids=[c[0][0] for c in TYPOS])
def test_a_typo_gets_one_error_line_naming_the_closest_key(
    monkeypatch, capsys, tmp_path, args, hint
):
    code, _, err = run_cli(
        monkeypatch, capsys, "experiment=smoke", f"paths.root={tmp_path}", "dry_run=true", *args
    )
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].endswith(hint)


def test_a_correct_override_and_a_far_typo_get_no_hint(monkeypatch, capsys, tmp_path):
    common = ("experiment=smoke", f"paths.root={tmp_path}", "dry_run=true")
    code, out, err = run_cli(monkeypatch, capsys, *common, "prompt_len=5", "trainer.steps=3")
    assert code == 0 and "did you mean" not in out + err, err
    code, _, err = run_cli(monkeypatch, capsys, *common, "qqqqqq=1")
    assert code == 2 and "Key 'qqqqqq' not in 'Config'" in err and "did you mean" not in err


def test_did_you_mean_picks_the_closest_other_word():
    assert did_you_mean("stpes", ["steps", "seed"]) == "; did you mean 'steps'?"
    assert did_you_mean("steps", ["steps"]) == ""  # the word itself is no suggestion
    assert did_you_mean("xyz", ["prompt_len", "seed"]) == ""


def test_lm_adapt_help_says_what_it_does_and_its_settings():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "repro.lm_adapt", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "Powered by Hydra" not in proc.stdout  # not Hydra's stock text
    assert proc.stdout.startswith("python -m repro.lm_adapt [key=value ...]")
    for pointer in ("docs/lm_adapt.md", "lm_adapt:\n  steps:", "python -m repro.run --help"):
        assert pointer in proc.stdout, pointer
