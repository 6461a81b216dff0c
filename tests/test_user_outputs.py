"""What a user of the suite sees cites only what the user has: every command's help is whole
(no description cut mid-sentence), the paper's numbers cite the paper and the repository's own
files (never a path of the machine that wrote them, nor a project's internal issue), an exported
adapter records a backbone that resolves on the user's side, and every directory the suite
writes atomically has the usual modes (not tempfile's or safetensors' owner-only ones)."""

import importlib
import json
import os
import re
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from repro.ensemble import ensemble_table
from repro.export import export
from repro.files import build_once, publish_dir
from repro.prompts import save_prompt

ROOT = Path(__file__).resolve().parents[1]
# What a user does not have: this machine's paths, the workplace's fact sheet, its issue tracker.
NOT_THE_USERS = re.compile(r"/work/|/check/|PAPER\.md|\.\./shared|\bissues? \d+", re.IGNORECASE)

# python -m repro.<command> → the module whose main() parses its arguments
COMMANDS = {
    "collect": "repro.collect.cli",
    "plots": "repro.plots.cli",
    "tables": "repro.tables",
    "ensemble": "repro.ensemble",
    "transfer": "repro.transfer",
    "interpret": "repro.interpret",
    "export": "repro.export",
    "cost": "repro.cost.cli",
    "toyworld": "repro.toyworld.__main__",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_commands_help_is_whole_and_cites_nothing_the_user_lacks(capsys, command):
    main = importlib.import_module(COMMANDS[command]).main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]  # argparse: usage, blank line, the description
    assert description.rstrip().endswith("."), f"cut mid-sentence: {description!r}"
    assert not NOT_THE_USERS.search(out), NOT_THE_USERS.search(out)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "results/paper").iterdir()))
def test_the_papers_numbers_cite_the_paper_and_the_repository_only(name):
    text = (ROOT / "results/paper" / name).read_text()
    assert not NOT_THE_USERS.search(text), NOT_THE_USERS.search(text)


def test_the_ensemble_table_cites_table_3_of_the_paper():
    frame = pd.DataFrame(
        [{"task": "rte", "ensemble_row": r, "n_prompts": 5, "score": 1.0, "size": "xxl",
          "ties": "seed"} for r in ("average", "best", "ensemble")]
    )  # fmt: skip
    table = ensemble_table(frame)
    assert "Paper (Lester et al. 2021, Table 3; T5-XXL, 5 prompts, SuperGLUE dev)" in table
    assert not NOT_THE_USERS.search(table)
    shipped = (ROOT / "results/toy/table3_ensemble.md").read_text()
    assert not NOT_THE_USERS.search(shipped)


# --- modes -----------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory.parent)): stat.S_IMODE(p.stat().st_mode)
        for p in [directory, *directory.rglob("*")]
    }


def _owner_only_files(directory: Path, sub: bool = True) -> None:
    """Writes as tempfile and safetensors do: owner-only (0600) files, in an 0700 folder."""
    paths = [directory / "weights.bin"]
    if sub:  # publish_dir's directories are flat (it fsyncs each file); build_once's are not
        (directory / "sub").mkdir(mode=0o700)
        paths.append(directory / "sub" / "more.bin")
    for path in paths:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def test_an_atomic_directory_gets_the_usual_modes_under_the_users_umask(tmp_path, umask):
    dirs, files = 0o777 & ~umask, 0o666 & ~umask  # 0755 / 0644 under umask 022
    publish_dir(tmp_path / "best", lambda d: _owner_only_files(d, sub=False))
    modes = _modes(tmp_path / "best")
    assert modes == {"best": dirs, "best/weights.bin": files}, {k: oct(v) for k, v in modes.items()}
    built = build_once(tmp_path / "tiny-t5", _owner_only_files, marker="weights.bin")
    modes = _modes(built)
    want = {"tiny-t5": dirs, "tiny-t5/sub": dirs}
    want |= {"tiny-t5/weights.bin": files, "tiny-t5/sub/more.bin": files}
    assert modes == want, {k: oct(v) for k, v in modes.items()}


# --- export: the backbone an adapter records ---------------------------------------------------


def _run(tmp_path: Path, backbone: str) -> Path:
    save_prompt(torch.ones(3, 8), tmp_path / "run" / "best", backbone=backbone, task="rte", step=1)
    return tmp_path / "run"


def test_an_adapter_records_a_hub_id_as_it_is_with_the_usual_modes(tmp_path, umask):
    out = export(_run(tmp_path, "google/t5-base-lm-adapt"), "peft", tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "google/t5-base-lm-adapt"
    assert 'from_pretrained("google/t5-base-lm-adapt")' in (out / "README.md").read_text()
    modes = _modes(out)
    assert modes.pop("adapter") == 0o777 & ~umask
    assert set(modes.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in modes.items()}


def test_an_adapter_records_a_local_backbone_relative_to_itself(tmp_path, monkeypatch):
    checkpoint = tmp_path / "cache" / "lm_adapt" / "base" / "step_10000"
    checkpoint.mkdir(parents=True)
    run = _run(tmp_path, str(checkpoint))  # a run records the absolute path it loaded
    out = export(run, "peft", tmp_path / "exports" / "rte_peft")
    recorded = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == "../../cache/lm_adapt/base/step_10000"
    assert str(tmp_path) not in (out / "adapter_config.json").read_text()
    assert str(tmp_path) not in (out / "README.md").read_text()
    assert f'from_pretrained(adapter / "{recorded}")' in (out / "README.md").read_text()
    # moved together, the adapter still finds its backbone; imported back, ours does too
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "exports").rename(moved / "exports")
    (tmp_path / "cache").rename(moved / "cache")
    monkeypatch.chdir(moved)
    back = export("exports/rte_peft", "repro", "imported")
    sidecar = json.loads((back / "prompt.json").read_text())
    assert sidecar["backbone"] == "../cache/lm_adapt/base/step_10000"
    assert (moved / "imported" / sidecar["backbone"]).resolve() == (
        moved / "cache/lm_adapt/base/step_10000"
    ).resolve()
    # --base-model, a directory given relative to the current directory: relative to out too
    base = "cache/lm_adapt/base/step_10000"
    again = export("exports/rte_peft", "peft", "a/b", base_model=base)
    config = json.loads((again / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == f"../../{base}"
