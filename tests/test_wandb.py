"""W&B logging: what an offline run records, read back without the network or wandb.Api.

An offline run keeps everything in ``<run_dir>/wandb/offline-run-*/run-<id>.wandb``: W&B's
record log. ``repro.collect.wandb_runs`` reads it into the config, history, summary and exit code
that ``wandb sync`` would upload, and serves those runs to ``collect_wandb`` like ``wandb.Api``
would (``python -m repro.collect --wandb-offline <dir>``). The helpers below wait for the exit
record, which W&B's service writes just after ``finish()`` returns in the same process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_run import smoke_config

import repro.run  # noqa: F401  (registers the run-name resolver and the config schemas)
from repro.collect import wandb_runs
from repro.collect.cli import main as collect
from repro.collect.frame import AXES
from repro.collect.rundirs import collect_runs
from repro.collect.wandb_runs import collect_wandb, collect_wandb_offline
from repro.job.experiment import run_experiment
from repro.tracking import WandbSink, default_mode

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def read_offline_run(run_dir: Path, wait_s: float = 30.0):
    """One offline W&B run dir, read once its exit record is there (up to ``wait_s``)."""
    return wandb_runs.read_offline_run(run_dir, wait_s=wait_s)


class OfflineApi(wandb_runs.OfflineApi):
    """``wandb.Api()`` for ``collect_wandb``: the offline runs under ``root``, each read once
    its exit record is there."""

    def __init__(self, root: Path):
        super().__init__(root, wait_s=30.0)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B's own files (settings, cache, artifacts) in tmp; no mode forced by the environment."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var, sub in (("WANDB_DIR", "wb"), ("WANDB_CONFIG_DIR", "wb-config")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wb-data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    return tmp_path


def test_offline_run_logs_config_metrics_and_result(wandb_env, tmp_path, tiny_t5_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = smoke_config(
        tmp_path,
        tiny_t5_dir,
        "logger=wandb",
        "logger.mode=offline",
        "logger.project=repro-test",
        "trainer.steps=6",
        "trainer.eval_every=3",
        "trainer.log_every=2",
        "task.max_eval_examples=16",
    )
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir, choices={"experiment": "smoke"})
    assert summary["status"] == "finished"

    # local files are written as with logger=none
    result = json.loads((run_dir / "result.json").read_text())
    assert (run_dir / "metrics.jsonl").exists()
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    run = read_offline_run(offline)
    assert run.id == result["wandb_id"] == (run_dir / "wandb_id.txt").read_text()

    # name from the axes (cfg.name), one group per sweep, the axes as tags
    assert run.name == "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0" == cfg.name
    assert run.group == "smoke" and run.project == "repro-test"
    assert {"size=tiny", "prompt_len=20", "init=class_label", "task=toy_keyword", "seed=0"} <= set(
        run.tags
    )
    # the LM-adaptation recipe of the backbone (the tiny model is the suite's own)
    assert "lm_adapt_source=own" in run.tags and run.config["lm_adapt_source"] == "own"
    # the resolved config, the axes at the top, the Hydra choices
    assert run.config["prompt_len"] == 20 and run.config["task"] == "toy_keyword"
    assert run.config["config"]["trainer"]["steps"] == 6
    assert run.config["config"]["model"]["path"] == str(tiny_t5_dir)
    assert run.config["choices"] == {"experiment": "smoke"}

    # train metrics every 2 steps, eval every 3, each with the trainer's step
    train = [r for r in run.history if "train/loss" in r]
    evals = [r for r in run.history if "eval/score" in r]
    assert [r["train/step"] for r in train] == [2, 4, 6]
    assert [r["eval/step"] for r in evals] == [3, 6]
    assert all("eval/accuracy" in r and "eval/best_score" in r for r in evals)
    local_evals = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    assert [r["eval/score"] for r in evals] == [r["score"] for r in local_evals]

    # the final result as the summary, the same fields as result.json
    for key in ("status", "score", "metrics", "best_step", "prompt_len", "task", "seed"):
        assert run.summary[key] == result[key], key
    assert run.exit_code == 0

    # collect_wandb reads back the row collect_runs builds from the run dir
    local = collect_runs([run_dir])
    logged = collect_wandb("offline/repro-test", group="smoke", api=OfflineApi(run_dir))
    assert len(logged) == 1
    cols = [*[a for a in AXES if a != "params"], "status", "score", "metric/accuracy"]
    assert logged[cols].astype(str).values.tolist() == local[cols].astype(str).values.tolist()
    assert logged.loc[0, "wandb_id"] == run.id

    # the same row from the command line, read from the offline files (no wandb.Api, no network)
    assert collect(["--wandb-offline", str(tmp_path), "--group", "smoke", "-o", "wb.csv"]) == 0
    from_cli = pd.read_csv("wb.csv")
    assert from_cli[cols].astype(str).values.tolist() == local[cols].astype(str).values.tolist()
    assert from_cli.loc[0, "run_dir"] == str(offline)  # where `wandb sync` would read it


def test_steps_restarting_per_task_are_all_kept(wandb_env, tmp_path):
    """task=superglue trains 8 prompts in one W&B run, each from step 0: no row may be lost."""
    sink = WandbSink(
        project="p",
        entity=None,
        group="g",
        name="two-tasks",
        tags=[],
        mode="offline",
        config={},
        run_dir=tmp_path,
    )
    for task_loss in (1.0, 2.0):  # two tasks, steps 1..3 each
        for step in (1, 2, 3):
            sink.log({"kind": "train", "step": step, "loss": task_loss + step}, step=step)
    sink.finish()
    (offline,) = list((tmp_path / "wandb").glob("offline-run-*"))
    train = [r for r in read_offline_run(offline).history if "train/loss" in r]
    assert [(r["train/step"], r["train/loss"]) for r in train] == [
        (1, 2.0),
        (2, 3.0),
        (3, 4.0),
        (1, 3.0),
        (2, 4.0),
        (3, 5.0),
    ]


def _offline_run(run_dir: Path, group: str, result: dict | None, failed=False, resume_id=None):
    """An offline W&B run logged as a job logs one (WandbSink): its result as the summary."""
    sink = WandbSink(
        project="p",
        entity=None,
        group=group,
        name=run_dir.name,
        tags=[],
        mode="offline",
        config={"task": "toy_review", "seed": 0, "prompt_len": int(run_dir.name[1:])},  # p<N>
        run_dir=run_dir,
        resume_id=resume_id,
    )
    sink.log({"kind": "train", "step": 1, "loss": 1.0}, step=1)
    if result is not None:
        sink.summary(result)
    sink.finish(failed=failed)
    read_offline_run(sorted((run_dir / "wandb").glob("offline-run-*"))[-1])  # written through
    return sink.run_id


def test_collect_wandb_offline_command(wandb_env, tmp_path, monkeypatch, capsys):
    """`python -m repro.collect --wandb-offline DIR [--group G]`: every offline run under DIR
    is a row, a resumed run (two offline dirs, one id) is one, its status is the summary's, else
    the exit code's; no network, no wandb.Api."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "multirun/toy_wandb"
    done = {"status": "finished", "task": "toy_review", "seed": 0, "score": 80.0}
    done["metrics"] = {"accuracy": 80.0}
    # interrupted, then resumed to its end: the resumed part carries the result
    first = _offline_run(sweep / "p5", "toy_wandb", None)
    _offline_run(sweep / "p5", "toy_wandb", {**done, "prompt_len": 5}, resume_id=first)
    parts = sorted((sweep / "p5/wandb").glob("offline-run-*"))
    assert len(parts) == 2
    # resumed within the same second: W&B names the second directory "<first's name>-1"
    # (resumed later it has a later time; either way one run, read in start order)
    same_second = f"offline-run-20260101_000000-{first}"
    parts[0].rename(parts[0].with_name(same_second))
    parts[1].rename(parts[1].with_name(f"{same_second}-1"))
    _offline_run(tmp_path / "multirun/other/p1", "other", None, failed=True)  # failed by its exit

    assert collect(["--wandb-offline", "multirun", "-o", "wb.csv"]) == 0
    frame = pd.read_csv("wb.csv").sort_values("prompt_len", ignore_index=True)
    assert frame[["prompt_len", "status"]].values.tolist() == [[1, "failed"], [5, "finished"]]
    assert frame.loc[1, "score"] == 80.0 and frame.loc[1, "metric/accuracy"] == 80.0
    assert frame.loc[1, "wandb_id"] == first
    assert "2 runs -> wb.csv" in capsys.readouterr().out

    # --group keeps one sweep's runs; the same frame from Python
    assert collect(["--wandb-offline", "multirun", "--group", "toy_wandb", "-o", "g.csv"]) == 0
    assert pd.read_csv("g.csv")["wandb_id"].tolist() == [first]
    assert collect_wandb_offline(tmp_path, group="other")["status"].tolist() == ["failed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wandb-offline", "nowhere"], "error: --wandb-offline: no such directory: nowhere; "),
        (["--wandb-offline", "empty"], "error: no run found in W&B offline runs under empty ("),
    ],
    ids=["missing-dir", "no-offline-runs"],
)
def test_collect_wandb_offline_refuses_bad_dirs(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty/run").mkdir(parents=True)
    (tmp_path / "old.csv").write_text("kept\n")
    assert collect([*args, "-o", "old.csv", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert "Traceback" not in err and (tmp_path / "old.csv").read_text() == "kept\n"


def test_default_mode_is_offline_without_a_wandb_key(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert default_mode() == "offline"  # no netrc at all
    netrc.write_text("machine github.com login me password not-a-wandb-key\n")
    netrc.chmod(0o600)
    assert default_mode() == "offline"  # a netrc for other hosts is no W&B key
    netrc.write_text(netrc.read_text() + "machine api.wandb.ai login user password abc\n")
    assert default_mode() == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert default_mode() == "offline"  # a self-hosted server needs its own entry
    monkeypatch.setenv("WANDB_API_KEY", "abc")
    assert default_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert default_mode() == "disabled"


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_logger_none_runs_without_importing_wandb(tmp_path, tiny_t5_dir):
    script = f"""
import sys
from hydra import compose, initialize_config_dir
import repro.collect, repro.plots, repro.run
from repro.resolve import load_config
with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
    cfg = compose("config", overrides=["experiment=smoke", "logger=none",
        "model.path={tiny_t5_dir}", "paths.cache_dir={tmp_path / "cache"}",
        "trainer.steps=2", "trainer.eval_every=2", "task.max_eval_examples=8"])
summary = repro.run.run_experiment(load_config(cfg), __import__("pathlib").Path({str(tmp_path / "r")!r}))
print(summary["status"], "wandb" in sys.modules)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_MODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["finished", "False"]
    assert not (tmp_path / "r/wandb").exists()
