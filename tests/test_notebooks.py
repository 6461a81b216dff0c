"""The analysis notebooks: stored without outputs, run headless with their defaults on a clean
clone (before and after the README's main job), and on a real smoke sweep with their knobs.

With their defaults: a clean clone of the repository (the files git tracks) in an empty
directory; each notebook runs there with no REPRO_* variable set, as `jupyter execute
analysis/<name>.ipynb` runs it. Before the main job (the default run): figure3 and figure1 draw
the shipped toy frames, compare_wandb and prompt_neighbours say in one line which file to make
and how. After it (slow: the README's second command runs as written in the clone, once per
module): figure3 draws the main job's frame, prompt_neighbours reads its p = 20 run, and
compare_wandb lines it up with the W&B frame its one line says how to make.

With their knobs: the Figure 3(a) smoke twin, shrunk (2 prompt lengths × 2 seeds, 16 steps),
logged to W&B in offline mode; its W&B frame is read back from the offline run files by
`python -m repro.collect --wandb-offline` (no network).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from repro.collect.cli import main as collect
from repro.collect.rundirs import collect_runs
from repro.collect.wandb_runs import read_offline_run
from repro.tracking import WandbSink

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
    paths = {"local": tmp / "local.csv", "wandb": tmp / "wandb.csv", "fig1": tmp / "fig1.csv"}
    local.to_csv(paths["local"], index=False)
    group = ["--group", "smoke_fig3a_prompt_len"]
    assert collect(["--wandb-offline", str(sweep), *group, "-o", str(paths["wandb"])]) == 0
    assert len(pd.read_csv(paths["wandb"])) == 4
    # Figure 1 = runs at the setting's default point: p=20 is the smoke experiment's default
    local[local["prompt_len"] == 20].to_csv(paths["fig1"], index=False)
    return paths


# Every knob the notebooks read: unset, a notebook runs with its defaults.
KNOBS = (
    "REPRO_FRAME",
    "REPRO_TASKS",
    "REPRO_OUT",
    "REPRO_REFERENCE",
    "REPRO_WANDB",
    "REPRO_WANDB_GROUP",
    "REPRO_WANDB_FRAME",
    "REPRO_RUN_DIR",
    "REPRO_K",
    "REPRO_ROOT",
)


def execute(name: str, monkeypatch, root: Path = ROOT, **params: str) -> nbformat.NotebookNode:
    """Run <root>/analysis/<name>.ipynb headless (as `jupyter execute` does: cwd = analysis/),
    with the given REPRO_* knobs and no other."""
    from nbclient import NotebookClient

    for key in KNOBS:
        monkeypatch.delenv(key, raising=False)
    for key, value in params.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(root / f"analysis/{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": root / "analysis"}}
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


# --- with their defaults, on a clean clone ------------------------------------------------------

MAIN_RUN = "multirun/toy/toy_review-toy_xl-lm_adapt-lm500-p20-class_label-s0"


def readme_main_job() -> str:
    """The README's second command ("# 2." in "Two commands"), as written."""
    section = (ROOT / "README.md").read_text().split("## Two commands", 1)[1].split("\n## ")[0]
    lines = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].splitlines()
    return lines[lines.index(next(x for x in lines if x.startswith("# 2."))) + 1]


def run_as_written(command: str, cwd: Path) -> None:
    proc = subprocess.run(
        command.replace("python ", f"{sys.executable} "),
        shell=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=MAIN_JOB_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def clean_clone(root: Path) -> Path:
    """A clean clone of the repository in ``root``: the files git tracks, as in the working tree
    (and new ones not ignored), none of what runs leave (multirun/, results/figures/, the main
    job's frame, wandb/: all ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not there
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    assert not (root / "results/toy_prompt_len.csv").exists() and not (root / "multirun").exists()
    return root


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clean clone, before the README's main job: only the shipped frames are there."""
    return clean_clone(tmp_path_factory.mktemp("clone"))


# The main job is 5 toy jobs: 37 s on an idle 2-core machine, over 10 min on a loaded one.
MAIN_JOB_TIMEOUT = 2400


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """A clean clone after the README's main job, run as written in it (cwd = the clone)."""
    root = clean_clone(tmp_path_factory.mktemp("clone"))
    command = readme_main_job()
    assert command.startswith("python -m repro.run -m experiment=toy prompt_len=1,5,20,100,150")
    run_as_written(command, root)
    assert (root / "results/toy_prompt_len.csv").exists() and (root / MAIN_RUN / "best").is_dir()
    return root


def only_line(nb) -> str:
    """The one line a notebook printed, and that it printed nothing else."""
    lines = stdout_of(nb).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


MAIN_JOB = "python -m repro.run -m experiment=toy prompt_len=1,5,20,100,150"


@pytest.mark.slow  # draws the 264 shipped toy runs in four panels: ~16 s
def test_figure3_notebook_with_its_defaults_before_the_main_job(clone, monkeypatch):
    """Before the main job figure3 draws the toy world's four panels shipped in the repository;
    it writes only under results/figures/ (nothing into analysis/, no run)."""
    nb = execute("figure3", monkeypatch, clone)
    assert "264 runs in results/toy/runs.csv; tasks averaged: toy_fact, toy_review" in stdout_of(nb)
    out = clone / "results/figures"
    assert_figures(
        out, "figure3a_prompt_len", "figure3b_init", "figure3d_lm_adapt_steps", "figure3"
    )
    assert not (clone / "analysis/results").exists() and not (clone / "multirun").exists()


def test_figure3_notebook_without_either_default_frame_says_how_to_make_one(tmp_path, monkeypatch):
    root = clean_clone(tmp_path)
    (root / "results/toy/runs.csv").unlink()
    assert only_line(execute("figure3", monkeypatch, root)) == (
        f"no results frame {root}/results/toy_prompt_len.csv: make it with `{MAIN_JOB} && "
        "python -m repro.collect multirun/toy -o results/toy_prompt_len.csv --overwrite`"
    )
    assert not (root / "results/figures").exists()


def test_figure1_notebook_with_its_defaults_draws_the_shipped_toy_frame(clone, monkeypatch):
    """Figure 1's default frame is shipped: the same before and after the main job."""
    text = stdout_of(execute("figure1", monkeypatch, clone))
    assert "72 runs in results/toy/fig1_scale.csv; tasks averaged: toy_fact, toy_review" in text
    assert str(clone / "results/figures/figure1.png") in text
    assert_figures(clone / "results/figures", "figure1")


def test_compare_wandb_notebook_with_its_defaults_before_the_main_job(clone, monkeypatch):
    assert only_line(execute("compare_wandb", monkeypatch, clone)) == (
        f"no results frame {clone}/results/toy_prompt_len.csv: make it with `{MAIN_JOB} && "
        "python -m repro.collect multirun/toy -o results/toy_prompt_len.csv --overwrite`"
    )
    assert not list(clone.glob("results/figures/compare_wandb*"))


def test_prompt_neighbours_notebook_with_its_defaults_before_the_main_job(clone, monkeypatch):
    assert only_line(execute("prompt_neighbours", monkeypatch, clone)) == (
        f"no run directory {clone / MAIN_RUN}: make it with `{MAIN_JOB}`, or set REPRO_RUN_DIR "
        "to a run"
    )
    assert not (clone / "multirun").exists()


@pytest.mark.slow
@pytest.mark.timeout(MAIN_JOB_TIMEOUT)
def test_figure3_notebook_with_its_defaults_draws_the_main_jobs_frame(main_job, monkeypatch):
    out = main_job / "results/figures"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    nb = execute("figure3", monkeypatch, main_job)
    assert "5 runs in results/toy_prompt_len.csv; tasks averaged: toy_review" in stdout_of(nb)
    assert_figures(out, "figure3a_prompt_len", "figure3")
    assert (out / "figure3.png").stat().st_mtime_ns > before.get("figure3.png", 0)
    assert not (out / "figure3b_init.png").exists()  # one panel: the main job's prompt lengths


@pytest.mark.slow
@pytest.mark.timeout(MAIN_JOB_TIMEOUT)
def test_figure1_notebook_with_its_defaults_after_the_main_job(main_job, monkeypatch):
    nb = execute("figure1", monkeypatch, main_job)
    text = stdout_of(nb)
    assert "72 runs in results/toy/fig1_scale.csv; tasks averaged: toy_fact, toy_review" in text
    assert str(main_job / "results/figures/figure1.png") in text
    assert_figures(main_job / "results/figures", "figure1")


@pytest.mark.slow
@pytest.mark.timeout(MAIN_JOB_TIMEOUT)
def test_compare_wandb_notebook_with_its_defaults_after_the_main_job(
    main_job, tmp_path, monkeypatch
):
    """Without a W&B frame: one line with the commands that make it, nothing drawn. With the
    frame that line's collect command writes from offline W&B runs of the main job's runs: the
    two frames line up run by run."""
    line = only_line(execute("compare_wandb", monkeypatch, main_job))
    frame = main_job / "results/toy_prompt_len_wandb.csv"
    sweep = (
        "python -m repro.run -m experiment=toy prompt_len=1,5,20,100,150 sweep_name=toy_wandb "
        "logger=wandb logger.mode=offline"
    )
    assert line.startswith(f"no results frame {frame}: make it with `{sweep} && python -m repro.")
    assert not list((main_job / "results/figures").glob("compare_wandb*"))

    # What each job of that sweep logs at its end (repro.job.experiment.finish_job): its
    # result.json as the summary of its offline W&B run, in the job's directory.
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for result_file in sorted((main_job / "multirun/toy").glob("*/result.json")):
        result = json.loads(result_file.read_text())
        sink_dir = main_job / "multirun/toy_wandb" / result_file.parent.name
        sink = WandbSink(
            project="repro",
            entity=None,
            group="toy_wandb",
            name=result_file.parent.name,
            tags=[],
            mode="offline",
            config={},
            run_dir=sink_dir,
        )
        sink.summary(result)
        sink.finish()
        (offline,) = (sink_dir / "wandb").glob("offline-run-*")
        assert read_offline_run(offline, wait_s=30).state == "finished"  # written through
    collect_command = line.split(" && ", 1)[1].rstrip("`")
    assert collect_command == (
        "python -m repro.collect --wandb-offline multirun/toy_wandb -o "
        "results/toy_prompt_len_wandb.csv"
    )
    run_as_written(collect_command, main_job)  # the line's second command, as written

    text = stdout_of(execute("compare_wandb", monkeypatch, main_job))
    assert "5 local runs, 5 W&B runs" in text
    assert "both          5" in text  # every run found on both sides
    assert "runs whose status differs: 0" in text
    assert "largest |score difference|: 0.0" in text
    assert_figures(main_job / "results/figures", "compare_wandb_prompt_len", "compare_wandb_scores")


@pytest.mark.slow
@pytest.mark.timeout(MAIN_JOB_TIMEOUT)
def test_prompt_neighbours_notebook_with_its_defaults_reads_the_main_jobs_run(
    main_job, monkeypatch
):
    text = stdout_of(execute("prompt_neighbours", monkeypatch, main_job))
    assert "best: " in text and "init: " in text and "among their top-5 neighbours" in text
    assert (main_job / MAIN_RUN / "interpret/summary.csv").exists()


@pytest.mark.slow
def test_figure3_notebook_shows_one_composite_per_family(tmp_path, monkeypatch):
    """A frame of T5 and decoder-only runs (the shipped toy frames of both) is drawn once per
    family (figure3_t5, figure3_causal), and the notebook shows both composites."""
    nb = execute(
        "figure3",
        monkeypatch,
        REPRO_FRAME="results/toy/runs.csv,results/toy_causal/runs.csv",
        REPRO_OUT=tmp_path,
    )
    assert_figures(tmp_path, "figure3_t5", "figure3_causal", "figure3a_prompt_len_causal")
    shown = [o for o in nb.cells[-1].outputs if "image/png" in o.get("data", {})]
    assert len(shown) == 2
