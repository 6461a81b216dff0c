"""The analysis notebooks: stored without outputs, and run headless on a real smoke sweep.

The sweep is the Figure 3(a) smoke twin, shrunk (2 prompt lengths × 2 seeds, 16 steps), logged
to W&B in offline mode; its W&B frame is read back from the offline run files (no network)
and stands in for `python -m repro.collect --wandb ...` in compare_wandb.ipynb.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_wandb import OfflineApi

from repro.collect.rundirs import collect_runs
from repro.collect.wandb_runs import collect_wandb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("figure3", "figure1", "compare_wandb", "prompt_neighbours")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(ROOT / f"analysis/{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])  # REPRO_* knobs in one place
    source = "\n".join(c.source for c in code)
    assert "from repro." in source and "def plot" not in source  # thin: plotting is in repro


@pytest.fixture(scope="module")
def frames(tmp_path_factory, tiny_t5_dir):
    """A shrunk fig3a smoke sweep logged offline to W&B → local, W&B and Figure 1 frames."""
    tmp = tmp_path_factory.mktemp("nb")
    shutil.copytree(tiny_t5_dir, tmp / "cache/tiny-t5")
    env = {**os.environ, "REPRO_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_MODE", None)
    env.update(
        WANDB_DIR=str(tmp / "wb"),
        WANDB_CONFIG_DIR=str(tmp / "wb-config"),
        WANDB_CACHE_DIR=str(tmp / "wb-cache"),
        WANDB_DATA_DIR=str(tmp / "wb-data"),
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "repro.run",
            "-m",
            "--config-dir",
            "sweeps/smoke",
            "--config-name",
            "fig3a_prompt_len",
            "prompt_len=1,20",
            "trainer.steps=16",
            "trainer.eval_every=8",
            "task.max_eval_examples=32",
            "logger=wandb",
            "logger.mode=offline",
            "logger.project=repro-smoke",
            f"paths.root={tmp}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp / "multirun/smoke_fig3a_prompt_len"
    local = collect_runs([sweep])
    assert len(local) == 4 and (local["status"] == "finished").all()
    logged = collect_wandb(
        "offline/repro-smoke", group="smoke_fig3a_prompt_len", api=OfflineApi(sweep)
    )
    assert len(logged) == 4
    paths = {"local": tmp / "local.csv", "wandb": tmp / "wandb.csv", "fig1": tmp / "fig1.csv"}
    local.to_csv(paths["local"], index=False)
    logged.to_csv(paths["wandb"], index=False)
    # Figure 1 = runs at the setting's default point: p=20 is the smoke experiment's default
    local[local["prompt_len"] == 20].to_csv(paths["fig1"], index=False)
    return paths


def execute(name: str, monkeypatch, **params: str) -> nbformat.NotebookNode:
    """Run analysis/<name>.ipynb headless (as `jupyter execute` does: cwd = analysis/)."""
    from nbclient import NotebookClient

    for key, value in params.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(ROOT / f"analysis/{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT / "analysis"}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    return nb


def stdout_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def assert_figures(out: Path, *names: str) -> None:
    for name in names:
        for suffix in (".png", ".pdf"):
            path = out / f"{name}{suffix}"
            assert path.exists() and path.stat().st_size > 5_000, path


@pytest.mark.slow
def test_figure3_notebook_draws_the_panels(frames, tmp_path, monkeypatch):
    execute(
        "figure3",
        monkeypatch,
        REPRO_FRAME=frames["local"],
        REPRO_TASKS="toy_keyword",
        REPRO_OUT=tmp_path,
    )
    assert_figures(tmp_path, "figure3a_prompt_len", "figure3")


@pytest.mark.slow
def test_figure1_notebook_draws_runs_and_reference_points(frames, tmp_path, monkeypatch):
    nb = execute(
        "figure1",
        monkeypatch,
        REPRO_FRAME=frames["fig1"],
        REPRO_TASKS="toy_keyword",
        REPRO_OUT=tmp_path,
    )
    assert_figures(tmp_path, "figure1")
    assert str(tmp_path / "figure1.png") in stdout_of(nb)


@pytest.mark.slow
def test_compare_wandb_notebook_matches_local_and_logged_runs(frames, tmp_path, monkeypatch):
    monkeypatch.delenv("REPRO_WANDB", raising=False)
    nb = execute(
        "compare_wandb",
        monkeypatch,
        REPRO_FRAME=frames["local"],
        REPRO_WANDB_FRAME=frames["wandb"],
        REPRO_TASKS="toy_keyword",
        REPRO_OUT=tmp_path,
    )
    assert_figures(tmp_path, "compare_wandb_prompt_len", "compare_wandb_scores")
    text = stdout_of(nb)
    assert "4 local runs, 4 W&B runs" in text
    assert "both          4" in text  # every run found on both sides
    assert "runs whose status differs: 0" in text
    assert "largest |score difference|: 0.0" in text
