"""Preemption and crashes: a killed or signalled smoke run resumes to an uninterrupted run's
numbers, leaves no torn or duplicated file, and a relaunched sweep skips its finished jobs."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_run import metric_lines

from repro.job.preemption import EXIT_REQUEUE
from repro.tracking import MetricsLog

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30
SHRINK = [
    f"trainer.steps={STEPS}",
    "trainer.eval_every=10",
    "trainer.log_every=1",  # one train line per step: every step's loss is compared
    "task.max_eval_examples=16",
]


def smoke_args(tiny_t5_dir, root: Path, *extra: str) -> list[str]:
    return [
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={root}",
        f"paths.cache_dir={root / 'cache'}",
        *SHRINK,
        *extra,
    ]


SECRETS = {"WANDB_API_KEY": "secret-xyz-wandb", "HF_TOKEN": "hf_secretxyz"}


def start(
    args: list[str], env_extra: dict | None = None, new_session: bool = False
) -> subprocess.Popen:
    """``python -m repro.run *args`` (with ``new_session``, in a process group of its own, as a
    terminal starts it: a signal to the group reaches every process it starts)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "repro.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run_dir_of(root: Path) -> Path:
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def wait_for_run_dir(root: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while not (root / "runs").exists() or not any((root / "runs").iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "the run never started"
        time.sleep(0.01)
    return run_dir_of(root)


def wait_for_step(metrics: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Poll ``metrics`` until a train line of step >= ``step`` appears; returns the step seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended (code {proc.returncode}) before step {step}")
        steps = [r["step"] for r in MetricsLog(metrics).read()]  # a line being written: skipped
        if steps and max(steps) >= step:
            return max(steps)
        time.sleep(0.01)
    raise AssertionError(f"no step {step} within {timeout} s")


def read_jsonl(path: Path) -> list[dict]:
    # json.loads on every line: a torn line fails the test here
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_intact(run_dir: Path) -> None:
    """Every file parses; no (kind, step) line twice; no staging file left behind."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), f"duplicated metrics lines: {keys}"
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, STEPS + 1))
    for name in ("result.json", "fingerprint.json", "best/prompt.json", "last/prompt.json"):
        json.loads((run_dir / name).read_text())
    for name in ("best", "last"):
        assert load_file(run_dir / name / "prompt.safetensors")["prompt"].shape == (20, 32)
    torch.load(run_dir / "last/trainer_state.pt", weights_only=True)
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers


def assert_same_run(run_dir: Path, reference: Path) -> None:
    mine, ref = (json.loads((d / "result.json").read_text()) for d in (run_dir, reference))
    keys = ("status", "metrics", "score", "best_step", "steps")
    assert {k: mine[k] for k in keys} == {k: ref[k] for k in keys}
    lines = [metric_lines(d / "metrics.jsonl") for d in (run_dir, reference)]
    assert lines[0] == lines[1]  # every line; the losses bit-equal, step by step
    for name in ("best", "last"):
        a = (run_dir / name / "prompt.safetensors").read_bytes()
        assert a == (reference / name / "prompt.safetensors").read_bytes(), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_t5_dir) -> Path:
    return make_reference(tmp_path_factory.mktemp("reference"), tiny_t5_dir)


def make_reference(root: Path, tiny_t5_dir) -> Path:
    """One uninterrupted run, in a subprocess like the interrupted ones; API keys in its env."""
    proc = start(smoke_args(tiny_t5_dir, root, "logger=none"), env_extra=SECRETS)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    (root / "console.txt").write_text(out + err)
    return run_dir_of(root)


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_no_api_key_reaches_any_file_or_the_console(reference):
    files = [p for p in reference.parent.parent.rglob("*") if p.is_file()]
    assert any(p.name == "result.json" for p in files) and any(p.name == "run.log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS.values():
            assert secret.encode() not in data, f"{secret} leaked into {path}"


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_everything_the_run_writes_is_data(reference):
    """Tensors in safetensors; the one torch file (optimizer + RNG state) loads weights_only."""
    files = [p for p in reference.rglob("*") if p.is_file() and p.name != ".lock"]
    suffixes = {p.suffix for p in files}
    assert suffixes <= {".safetensors", ".json", ".jsonl", ".yaml", ".log", ".pt"}, suffixes
    # .lock holds one line of text: who holds (or last held) the directory
    assert (reference / ".lock").read_text().startswith("pid ")
    (torch_file,) = [p for p in reference.rglob("*.pt")]
    assert torch_file.name == "trainer_state.pt"
    torch.load(torch_file, weights_only=True)


@pytest.mark.slow  # an end-to-end soak: a job killed and relaunched in subprocesses
def test_sigkill_at_a_random_step_then_restart_equals_an_uninterrupted_run(
    tmp_path, tiny_t5_dir, reference
):
    # Up to step 20 of 30: before the first checkpoint (10) as often as after it.
    k = random.randint(1, 20)
    proc = start(smoke_args(tiny_t5_dir, tmp_path))
    run_dir = wait_for_run_dir(tmp_path, proc)
    seen = wait_for_step(run_dir / "metrics.jsonl", k, proc)
    proc.send_signal(signal.SIGKILL)
    code, _ = finish(proc)
    assert code == -signal.SIGKILL, f"k={k}: the run ended on its own (code {code})"
    assert not (run_dir / "result.json").exists(), f"k={k}"

    code, err = finish(start(smoke_args(tiny_t5_dir, tmp_path)))
    assert code == 0, f"k={k}, killed after step {seen}: {err[-2000:]}"
    assert_intact(run_dir)
    assert_same_run(run_dir, reference)


@pytest.mark.slow  # 2 more subprocess runs; the signal → flag → handler chain is tested fast below
def test_sigterm_checkpoints_exits_for_requeue_and_resumes(tmp_path, tiny_t5_dir, reference):
    k = random.randint(1, 20)
    proc = start(smoke_args(tiny_t5_dir, tmp_path))
    run_dir = wait_for_run_dir(tmp_path, proc)
    wait_for_step(run_dir / "metrics.jsonl", k, proc)
    proc.send_signal(signal.SIGTERM)
    while proc.poll() is None:  # and again, through the checkpoint and the exit: no effect
        time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == EXIT_REQUEUE, f"k={k}: {err[-2000:]}"
    assert "received SIGTERM" in err and "run again to resume" in err
    assert "Traceback" not in err
    assert not (run_dir / "result.json").exists()
    # the checkpoint is the step the loop stopped at, not only the last eval's
    stopped = torch.load(run_dir / "last/trainer_state.pt", weights_only=True)["state"]["step"]
    logged = max(r["step"] for r in read_jsonl(run_dir / "metrics.jsonl"))
    assert k <= stopped == logged < STEPS

    code, err = finish(start(smoke_args(tiny_t5_dir, tmp_path)))
    assert code == 0, err[-2000:]
    assert_intact(run_dir)
    assert_same_run(run_dir, reference)


@pytest.mark.slow  # two launches of a 2-job sweep: ~1-2 min on 2 cores
def test_relaunched_sweep_skips_finished_jobs_and_resumes_the_crashed_one(tmp_path, tiny_t5_dir):
    args = ["-m", *smoke_args(tiny_t5_dir, tmp_path, "prompt_len=20,21")]
    sweep = tmp_path / "multirun/smoke"
    first = sweep / "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    second = sweep / "toy_keyword-tiny-lm_adapt100k-p21-class_label-s0"
    proc = start(args)
    deadline = time.monotonic() + 240
    while not (second / "metrics.jsonl").exists():  # job 1 done, job 2 training
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    wait_for_step(second / "metrics.jsonl", 5, proc)
    proc.send_signal(signal.SIGKILL)  # the whole sweep crashes
    finish(proc)
    assert json.loads((first / "result.json").read_text())["status"] == "finished"
    assert not (second / "result.json").exists()
    kept = {
        name: ((first / name).read_bytes(), (first / name).stat().st_mtime_ns)
        for name in ("result.json", "metrics.jsonl", "best/prompt.safetensors")
    }

    code, err = finish(start(args))
    assert code == 0, err[-2000:]
    for name, (data, mtime) in kept.items():  # skipped: not a byte rewritten, not even touched
        assert ((first / name).read_bytes(), (first / name).stat().st_mtime_ns) == (data, mtime)
    result = json.loads((second / "result.json").read_text())
    assert (result["status"], result["steps"], result["prompt_len"]) == ("finished", STEPS, 21)
    keys = [(r["kind"], r["step"]) for r in read_jsonl(second / "metrics.jsonl")]
    assert len(keys) == len(set(keys))


def test_signal_sets_the_flag_and_is_then_handed_to_the_launchers_handler():
    from repro.job.preemption import preemption_signals
    from repro.trainer import StopFlag

    received = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        stop = StopFlag()
        with preemption_signals(stop) as handler:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            assert stop.reason == "received SIGUSR2"
            assert received == []  # submitit's requeue waits until our checkpoint is written
            handler.forward()
            assert received == [signal.SIGUSR2]
        # outside, the launcher's handler is back
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
        assert received == [signal.SIGUSR2, signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_leaving_for_requeue_a_repeated_signal_is_ignored_not_fatal():
    """After the checkpoint the job leaves by sys.exit(75); a second SIGTERM during the exit
    (Hydra's unwinding, the interpreter's shutdown) must not kill it with no requeue code."""
    from repro.job.preemption import EXIT_REQUEUE, preemption_signals
    from repro.trainer import StopFlag

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        with pytest.raises(SystemExit), preemption_signals(StopFlag()) as handler:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert handler.signum == signal.SIGUSR1
            sys.exit(EXIT_REQUEUE)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is handler  # a second Ctrl-C still aborts
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: this test goes on
        time.sleep(0.05)
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)
