"""W&B logging: what an offline run records, read back without the network or wandb.Api.

An offline run keeps everything in ``<run_dir>/wandb/offline-run-*/run-<id>.wandb``: W&B's
record log (a LevelDB-style log of protobuf ``Record`` messages). ``read_offline_run`` parses it
into the config, history, summary and exit code that ``wandb sync`` would upload, and
``OfflineApi`` serves those runs to ``repro.collect.collect_wandb`` like ``wandb.Api`` would.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_run import smoke_config

import repro.run  # noqa: F401  (registers the run-name resolver and the config schemas)
from repro.collect.frame import AXES
from repro.collect.rundirs import collect_runs
from repro.collect.wandb_runs import collect_wandb
from repro.job.experiment import run_experiment
from repro.tracking import WandbSink, default_mode

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
_BLOCK = 32 * 1024  # the record log's block size
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """The protobuf records of one ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    pos, chunks, pending = 7, [], b""  # 7-byte file header: magic, version
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a record header never straddles blocks: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")  # after a 4-byte CRC
        kind, chunk = data[pos + 6], data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            chunks.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            chunks.append(pending + chunk)
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def _item_key(item) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _set(target: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def read_offline_run(run_dir: Path, wait_s: float = 30.0) -> SimpleNamespace:
    """One offline W&B run dir → id, name, group, tags, config, history rows, summary, state.

    W&B's service process writes the file after ``finish()`` returns; wait (up to ``wait_s``)
    until its exit record is there rather than read a half-written log.
    """
    deadline = time.monotonic() + wait_s
    while True:
        run = _parse_offline_run(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _parse_offline_run(run_dir: Path) -> SimpleNamespace:
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = SimpleNamespace(config={}, history=[], summary={}, exit_code=None, project=None, id=None)
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.tags = r.run_id, r.display_name, r.run_group, r.tags
            run.project = r.project
            for item in r.config.update:
                _set(run.config, _item_key(item), json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, _item_key(item), json.loads(item.value_json))
        elif kind == "history":
            row = {"/".join(_item_key(i)): json.loads(i.value_json) for i in record.history.item}
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, _item_key(item), json.loads(item.value_json))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    run.state = {None: "running", 0: "finished"}.get(run.exit_code, "failed")
    run.path = f"offline/{run.project}/{run.id}"
    return run


class OfflineApi:
    """Stands in for ``wandb.Api()`` in ``collect_wandb``: serves the offline runs under ``root``."""

    def __init__(self, root: Path):
        self._runs = [read_offline_run(d) for d in sorted(Path(root).rglob("offline-run-*"))]

    def runs(self, path: str, filters: dict | None = None) -> list:
        group = (filters or {}).get("group")
        return [r for r in self._runs if group is None or r.group == group]


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


def test_offline_run_logs_config_metrics_and_result(wandb_env, tmp_path, tiny_t5_dir):
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
