"""The smoke experiment end to end: in-process, as a 2-job multirun, resumed, failing cleanly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import repro.run
from repro.cli import RunError
from repro.job.experiment import run_experiment
from repro.resolve import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = Path(__file__).resolve().parents[1]


def smoke_config(tmp_path, tiny_t5_dir, *overrides):
    """The real smoke experiment, pointed at the session's tiny model and a temp cache."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "experiment=smoke",
                f"model.path={tiny_t5_dir}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"paths.root={tmp_path}",
                *overrides,
            ],
        )
    return load_config(cfg)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def metric_lines(path) -> list[dict]:
    """Every line of a metrics.jsonl but its wall-clock field (steps_per_s)."""
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in read_jsonl(path)]


def test_smoke_run_learns_and_writes_the_run_directory(tmp_path, tiny_t5_dir):
    cfg = smoke_config(tmp_path, tiny_t5_dir)
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "finished"

    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "best", "last", "result.json"} <= names
    assert {p.name for p in (run_dir / "best").iterdir()} == {"prompt.safetensors", "prompt.json"}
    assert "trainer_state.pt" in {p.name for p in (run_dir / "last").iterdir()}

    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [100, 200]
    assert train[-1]["loss"] < train[0]["loss"] / 2  # the loss goes down

    result = json.loads((run_dir / "result.json").read_text())
    dev = [json.loads(x) for x in (tmp_path / "cache/toy-data/toy_keyword/validation.jsonl").open()]
    labels = [r["label"] for r in dev]
    majority = 100 * max(labels.count(0), labels.count(1)) / len(labels)
    assert result["metrics"]["accuracy"] > majority + 10
    assert result["score"] == max(r["score"] for r in evals)
    assert result["best_step"] in (100, 200)
    assert result["trainable_params"] == 20 * 32
    assert result["frozen_params"] > 10 * result["trainable_params"]
    axes = {k: result[k] for k in ("size", "objective", "prompt_len", "init", "task", "seed")}
    assert axes == {
        "size": "tiny",
        "objective": "lm_adapt",
        "prompt_len": 20,
        "init": "class_label",
        "task": "toy_keyword",
        "seed": 0,
    }
    assert result["status"] == "finished" and result["wall_s"] > 0
    assert result["precision"] == "fp32"  # trainer.precision=auto on a CPU
    assert result["grad_accum"] == 1  # auto: one micro-batch fits
    assert result["lm_adapt_source"] == "own"  # the tiny model is the suite's own, not Google's

    # best/ alone, loaded into a fresh frozen model, scores exactly the best dev metrics.
    best_metrics = rescore_best_prompt(cfg, run_dir / "best", result)
    assert best_metrics == result["metrics"]


def rescore_best_prompt(cfg, best_dir, result):
    from transformers import AutoTokenizer

    from repro.backbone import load_backbone
    from repro.data import encode
    from repro.evaluate import evaluate
    from repro.model import PromptedT5
    from repro.prompts import SoftPrompt, load_prompt
    from repro.tasks import get_task
    from repro.tasks.base import data_dir_for

    task = get_task(cfg.task.name)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    dev = task.examples(task.eval_split, data_dir_for(task, cfg.task.data_dir, cfg.paths.cache_dir))
    tokens = encode(dev, tokenizer, task.max_input_length, result["max_target_length"])
    prompt, sidecar = load_prompt(best_dir)
    assert sidecar["step"] == result["best_step"]
    model = PromptedT5(load_backbone(cfg.model.path), SoftPrompt(prompt))
    metrics, _ = evaluate(
        model,
        tokenizer,
        task,
        dev,
        tokens.input_ids,
        batch_size=cfg.trainer.eval_batch_size,
        max_new_tokens=result["max_target_length"],
    )
    return metrics


def test_resume_after_interrupt_ends_with_the_same_metrics(tmp_path, tiny_t5_dir):
    overrides = [
        "trainer.steps=30",
        "trainer.eval_every=10",
        "trainer.log_every=5",
        "model.dropout=0.1",
    ]
    straight = run_experiment(smoke_config(tmp_path, tiny_t5_dir, *overrides), tmp_path / "a")
    assert straight["status"] == "finished"
    cfg = smoke_config(tmp_path, tiny_t5_dir, *overrides, "trainer.stop_after_steps=13")
    first = run_experiment(cfg, tmp_path / "b")
    assert first["status"] == "interrupted"
    assert not (tmp_path / "b/result.json").exists()
    state = torch.load(tmp_path / "b/last/trainer_state.pt", weights_only=True)
    assert state["state"]["step"] == 13
    second = run_experiment(cfg, tmp_path / "b")  # resumes at 13, stops again at 26
    assert second["status"] == "interrupted"
    resumed = run_experiment(cfg, tmp_path / "b")  # 26 → 30, done
    assert resumed["status"] == "finished"

    a = json.loads((tmp_path / "a/result.json").read_text())
    b = json.loads((tmp_path / "b/result.json").read_text())
    assert (a["metrics"], a["best_step"], a["score"]) == (b["metrics"], b["best_step"], b["score"])
    prompt_a = (tmp_path / "a/last/prompt.safetensors").read_bytes()
    assert prompt_a == (tmp_path / "b/last/prompt.safetensors").read_bytes()
    # every line, none lost or duplicated by the restarts; the loss lines at 15 and 30 average
    # steps from both sides of a stop (13, 26): the loss window is saved in last/
    lines_a, lines_b = (metric_lines(tmp_path / d / "metrics.jsonl") for d in ("a", "b"))
    assert [r["step"] for r in lines_a if r["kind"] == "train"] == [5, 10, 15, 20, 25, 30]
    assert lines_a == lines_b


def test_finished_run_is_skipped_and_another_config_is_refused(tmp_path, tiny_t5_dir):
    cfg = smoke_config(tmp_path, tiny_t5_dir, "trainer.steps=4", "trainer.eval_every=4")
    run_experiment(cfg, tmp_path / "r")
    before = (tmp_path / "r/result.json").read_bytes()
    again = run_experiment(cfg, tmp_path / "r")
    assert again["status"] == "finished" and again["skipped"]
    stored = json.loads(before)["score"]
    assert stored is not None and again["score"] == stored  # its stored score, printed as such
    assert (tmp_path / "r/result.json").read_bytes() == before

    other = smoke_config(tmp_path, tiny_t5_dir, "trainer.steps=8", "trainer.eval_every=4")
    with pytest.raises(RunError, match=r"different config \(differs in: trainer.steps\)"):
        run_experiment(other, tmp_path / "r")
    assert (tmp_path / "r/result.json").read_bytes() == before


def test_own_lm_adaptation_is_the_same_run_only_where_it_loads_the_same_backbone(
    tmp_path, tiny_t5_dir
):
    """lm_adapt_source=own at a count Google never released loads what auto loads: the finished
    auto run is that run (skipped). At 100K own replaces the release: another run, refused in
    the auto run's directory (its default name differs, `..._own`)."""
    short = ["trainer.steps=4", "trainer.eval_every=4"]
    auto = smoke_config(tmp_path, tiny_t5_dir, *short, "lm_adapt_steps=20")
    run_experiment(auto, tmp_path / "r")
    before = (tmp_path / "r/result.json").read_bytes()
    own = smoke_config(tmp_path, tiny_t5_dir, *short, "lm_adapt_steps=20", "lm_adapt_source=own")
    assert run_experiment(own, tmp_path / "r")["status"] == "finished"
    assert (tmp_path / "r/result.json").read_bytes() == before

    run_experiment(smoke_config(tmp_path, tiny_t5_dir, *short), tmp_path / "s")
    own_100k = smoke_config(tmp_path, tiny_t5_dir, *short, "lm_adapt_source=own")
    with pytest.raises(RunError, match=r"differs in: lm_adapt_source\)"):
        run_experiment(own_100k, tmp_path / "s")


def test_non_finite_loss_fails_the_run_naming_the_step(tmp_path, tiny_t5_dir, monkeypatch):
    import repro.model

    calls = {"n": 0}
    real = repro.model.token_loss

    def poisoned(logits, labels, z_loss=0.0):
        calls["n"] += 1
        loss = real(logits, labels, z_loss)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(repro.model, "token_loss", poisoned)
    cfg = smoke_config(tmp_path, tiny_t5_dir, "trainer.steps=5", "trainer.eval_every=5")
    summary = run_experiment(cfg, tmp_path / "r")
    assert summary["status"] == "failed"
    result = json.loads((tmp_path / "r/result.json").read_text())
    assert result["status"] == "failed"
    assert "non-finite loss (nan) at step 3" in result["error"]


def run_cli(*args, cwd, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "repro.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_multirun_of_two_jobs_and_a_failing_job_does_not_stop_the_sweep(tmp_path, tiny_t5_dir):
    proc = run_cli(
        "-m",
        "experiment=smoke",
        "task=toy_keyword,rte",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.steps=6",
        "trainer.eval_every=3",
        "task.max_eval_examples=16",
        cwd=ROOT,
    )
    # the sweep went on past the failing job, and ends saying so: exit 1, the job named
    assert proc.returncode == 1, proc.stderr[-2000:]
    sweep = tmp_path / "multirun/smoke"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [
        "rte-tiny-lm_adapt100k-p20-class_label-s0",
        "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0",
    ]
    ok = json.loads((sweep / jobs[1] / "result.json").read_text())
    assert ok["status"] == "finished" and ok["steps"] == 6
    assert (sweep / jobs[1] / "best/prompt.safetensors").exists()
    failed = json.loads((sweep / jobs[0] / "result.json").read_text())
    assert failed["status"] == "failed"
    assert "task 'rte': cannot load split 'train' of aps/super_glue (rte)" in failed["error"]
    assert "set task.data_dir to local files" in failed["error"]
    summary, header, named = proc.stderr.splitlines()[-3:]
    assert summary == f"sweep {sweep}: 2 jobs: 1 finished, 1 failed, 0 interrupted, 0 skipped"
    assert header == "1 of 2 jobs failed:"
    assert named == f"  {sweep / jobs[0]}: {failed['error'].splitlines()[0]}"
    assert "Traceback" not in proc.stderr


def test_cli_bad_value_is_one_line_without_traceback(tmp_path):
    proc = run_cli("experiment=smoke", "prompt_len=0", f"paths.root={tmp_path}", cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: prompt_len must be an integer >= 1; got 0"
    assert not list(tmp_path.glob("runs/*/result.json"))


# --- how a sweep ends: its jobs counted, the failed ones named, exit 1 (repro/sweep.py) ---------

P0 = "toy_keyword-tiny-lm_adapt100k-p0-class_label-s0"
P3 = "toy_keyword-tiny-lm_adapt100k-p3-class_label-s0"


def sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, *overrides):
    """``python -m repro.run -m`` on the tiny smoke setting, in this process: (code, out, err)."""
    from test_bad_input import run_cli, smoke

    return run_cli(monkeypatch, capsys, "-m", *smoke(tmp_path, tiny_t5_dir, *overrides))


def test_sweep_with_a_rejected_value_names_it_exits_1_and_keeps_its_axes(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    from repro.collect.rundirs import collect_runs

    sweep = tmp_path / "multirun/smoke"
    code, _, err = sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, "prompt_len=0,3")
    assert code == 1, err
    assert err.splitlines()[-3:] == [
        f"sweep {sweep}: 2 jobs: 1 finished, 1 failed, 0 interrupted, 0 skipped",
        "1 of 2 jobs failed:",
        f"  {sweep / P0}: prompt_len must be an integer >= 1; got 0",
    ]
    assert "Traceback" not in err
    # one `error:` line per failed job (the job's own); the summary adds none
    assert [x for x in err.splitlines() if x.startswith("error:")] == [
        "error: prompt_len must be an integer >= 1; got 0"
    ]
    assert not (sweep / ".sweep_jobs").exists()  # the jobs' records are read, then removed
    # the rejected job's row says which job it was
    row = collect_runs([sweep]).set_index("run_dir").loc[str(sweep / P0)]
    assert row["status"] == "failed" and "prompt_len must be an integer >= 1" in row["error"]
    assert (row["prompt_len"], row["size"], row["task"], row["seed"]) == (
        0,
        "tiny",
        "toy_keyword",
        0,
    )
    assert (row["init"], row["objective"], row["lm_adapt_steps"]) == (
        "class_label",
        "lm_adapt",
        100000,
    )

    # Launched again: the finished job is skipped; the rejected one writes nothing this time (its
    # result.json is there) and still counts as failed. Another sweep's records are not counted.
    other = sweep / ".sweep_jobs/an-earlier-sweep"
    other.mkdir(parents=True)
    (other / "0.json").write_text(json.dumps({"job": 0, "run_dir": "x", "status": "failed"}))
    code, _, err = sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, "prompt_len=0,3")
    assert code == 1, err
    assert err.splitlines()[-3:] == [
        f"sweep {sweep}: 2 jobs: 0 finished, 1 failed, 0 interrupted, 1 skipped",
        "1 of 2 jobs failed:",
        f"  {sweep / P0}: prompt_len must be an integer >= 1; got 0",
    ]
    assert (other / "0.json").exists()

    # no failure: the summary on stdout, then the commands for the frame and figure; exit 0
    code, out, err = sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, "prompt_len=3")
    assert code == 0, err
    assert out.splitlines()[-2:] == [
        f"sweep {sweep}: 1 job: 0 finished, 0 failed, 0 interrupted, 1 skipped",
        f"next: python -m repro.collect {sweep} -o results/smoke.csv && python -m repro.plots "
        "results/smoke.csv -o results/figures --tasks toy_keyword",
    ]
    assert "error:" not in err


def test_sweep_job_refused_by_its_directory_counts_as_failed(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """A job refused because its directory holds another config's run writes nothing there; it
    still counts as failed, with the refusal as its error."""
    sweep = tmp_path / "multirun/smoke"
    code, out, err = sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, "prompt_len=3")
    assert code == 0, err
    assert out.splitlines()[-2].endswith(": 1 job: 1 finished, 0 failed, 0 interrupted, 0 skipped")
    before = (sweep / P3 / "result.json").read_bytes()
    code, _, err = sweep_cli(
        monkeypatch, capsys, tmp_path, tiny_t5_dir, "prompt_len=3", "trainer.steps=4"
    )
    assert code == 1, err
    summary, header, named = err.splitlines()[-3:]
    assert summary == f"sweep {sweep}: 1 job: 0 finished, 1 failed, 0 interrupted, 0 skipped"
    assert header == "1 of 1 jobs failed:"
    assert named.startswith(f"  {sweep / P3}: ")
    assert "already holds a run of a different config (differs in: trainer.steps)" in named
    assert (sweep / P3 / "result.json").read_bytes() == before


def test_sweep_with_an_interrupted_job_counts_it_and_exits_0(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    overrides = ["prompt_len=3", "trainer.steps=4", "trainer.stop_after_steps=1"]
    code, out, err = sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, *overrides)
    assert code == 0, err
    assert out.splitlines()[-1] == (
        f"sweep {tmp_path / 'multirun/smoke'}: 1 job: 0 finished, 0 failed, 1 interrupted, 0 skipped"
    )


def test_preempted_sweep_still_exits_75(tmp_path, tiny_t5_dir, monkeypatch, capsys):
    """A preemption signal during a job stops the in-process sweep with exit 75 (requeue): the
    summary must not turn it into 0 or 1, and no later job starts."""
    import signal
    import time

    from repro.job.preemption import EXIT_REQUEUE

    started = []

    def preempted(cfg, run_dir, **kwargs):
        started.append(run_dir.name)
        os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends; the job's handler catches it
        time.sleep(0.05)
        return {"status": "interrupted", "error": "stopped at step 1 (received SIGTERM)"}

    monkeypatch.setattr(repro.run, "run_experiment", preempted)
    names = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in names}
    try:
        code, out, err = sweep_cli(monkeypatch, capsys, tmp_path, tiny_t5_dir, "prompt_len=3,4")
        # leaving for requeue, a repeated signal is ignored (repro.job.preemption.preemption_signals)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:  # this process is pytest's, which goes on
        for name, handler in handlers.items():
            signal.signal(getattr(signal, name), handler)
    assert code == EXIT_REQUEUE, err
    assert started == [P3]
    assert "sweep " not in out + err and "jobs failed" not in err


@pytest.mark.slow  # 3 processes (the sweep + 2 jobs through submitit) import torch: ~30-50 s
def test_sweep_through_the_local_launcher_names_its_failed_job(tmp_path, tiny_t5_dir):
    """Under hydra-submitit-launcher every job runs in its own process; what each job recorded
    still reaches the summary that the launching process prints, and its exit code."""
    proc = run_cli(
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.gpus_per_node=0",
        "experiment=smoke",
        "prompt_len=0,3",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.steps=2",
        "trainer.eval_every=2",
        "task.max_eval_examples=8",
        cwd=ROOT,
    )
    sweep = tmp_path / "multirun/smoke"
    assert (sweep / ".submitit").is_dir()  # really went through submitit's executor
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-3:] == [
        f"sweep {sweep}: 2 jobs: 1 finished, 1 failed, 0 interrupted, 0 skipped",
        "1 of 2 jobs failed:",
        f"  {sweep / P0}: prompt_len must be an integer >= 1; got 0",
    ]


def test_job_outcome_reads_what_the_job_wrote_and_only_that(tmp_path):
    """Each rule of `repro.sweep.job_outcome`, on run directories written by hand."""
    from repro.sweep import job_outcome
    from repro.sweep import outcome_stamps as stamps

    job = tmp_path / "superglue-job"  # task=superglue: summary.json, one error per task
    job.mkdir()
    before = stamps(job)
    errors = {"boolq": "ValueError: bad\nmore", "cb": "RuntimeError: CUDA OOM"}
    (job / "summary.json").write_text(json.dumps({"status": "failed", "errors": errors}))
    assert job_outcome(job, before, []) == {
        "status": "failed",
        "error": "boolq: ValueError: bad; cb: RuntimeError: CUDA OOM",
    }
    # an earlier launch's failed result, not rewritten by this one: not this job's outcome
    assert job_outcome(job, stamps(job), [])["status"] == "interrupted"
    # an earlier finished run, not rewritten: skipped; unless the job printed an error
    (job / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert job_outcome(job, stamps(job), [])["status"] == "skipped"
    assert job_outcome(job, stamps(job), ["it holds another config"]) == {
        "status": "failed",
        "error": "it holds another config",
    }


def test_error_lines_passes_everything_through_and_keeps_error_lines():
    import io

    from repro.sweep import ErrorLines

    sink = io.StringIO()
    tee = ErrorLines(sink)
    print("error: prompt_len must be", end="", file=tee)  # a line in two writes
    print(" >= 1; got 0", file=tee)
    print("Loading weights: 10%\rLoading weights: 100%", file=tee)
    tee.write("\r" + "x" * 10_000)  # a progress bar with no newline yet: kept short
    assert sink.getvalue().startswith("error: prompt_len must be >= 1; got 0\nLoading")
    assert tee.lines == ["prompt_len must be >= 1; got 0"]
    assert len(tee._line) <= ErrorLines.MAX_LINE
