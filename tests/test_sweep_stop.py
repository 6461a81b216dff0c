"""One Ctrl-C stops a whole sweep, under every launcher the README names.

A terminal's Ctrl-C sends SIGINT to its foreground process group: the sweep's process and every
process it started (submitit's local job controllers and their jobs). Each test starts a sweep
in a process group of its own, waits until its first job trains, sends ONE SIGINT to the group
and checks what the README promises: exit 130, one summary line (the form of
``repro.sweep``'s docstring), no traceback, the running job's ``last/`` written, no job started
after the signal; the same command then resumes the stopped job and finishes the sweep.

SLURM cannot run here: its stop logic (cancel what is pending, wait for what runs, one line,
exit 130) is tested on a fake executor's jobs.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_preemption import start, wait_for_step

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "multirun/smoke"
STEPS = 30  # a relaunch trains every job to the end: keep it short


def job_dir(root: Path, p: int) -> Path:
    return root / SWEEP / f"toy_keyword-tiny-lm_adapt100k-p{p}-class_label-s0"


def launch(root: Path, tiny_t5_dir, *extra: str) -> subprocess.Popen:
    """``python -m repro.run -m ...`` in a process group of its own, as a terminal starts it."""
    args = [
        "-m",
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={root}",
        f"paths.cache_dir={root / 'cache'}",
        f"trainer.steps={STEPS}",
        f"trainer.eval_every={STEPS}",
        "trainer.log_every=1",
        "task.max_eval_examples=8",
        *extra,
    ]
    return start(args, env_extra={"OMP_NUM_THREADS": "1"}, new_session=True)


def ctrl_c_while_training(proc: subprocess.Popen, run_dir: Path) -> tuple[int, str, str]:
    """Wait for ``run_dir`` to train a step, then one SIGINT to the whole process group."""
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"{run_dir.name} never trained: {out[-1500:]}{err[-2500:]}")
        time.sleep(0.02)
    wait_for_step(run_dir / "metrics.jsonl", 2, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def stopped_line(root: Path, counts: str) -> str:
    return f"sweep {root / SWEEP}: stopped by Ctrl-C: {counts}; relaunch the same command to resume"


def assert_stopped(code, out, err, root, counts) -> None:
    text = out + err
    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "UncompletedJobError" not in text, text[-3000:]
    assert text.count("stopped by Ctrl-C") == 1, text[-3000:]
    assert stopped_line(root, counts) in err.splitlines(), err[-3000:]


def assert_resumes(proc, root, n) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out + err)[-3000:]
    assert (
        f"sweep {root / SWEEP}: {n} jobs: {n} finished, 0 failed, 0 interrupted, 0 skipped" in out
    )
    return out


@pytest.mark.slow  # a launch, a Ctrl-C, a relaunch (each importing torch): ~20 s on 2 cores
def test_basic_launcher(tmp_path, tiny_t5_dir):
    """Jobs run one after the other in the sweep's process: the running one checkpoints, the
    next one never starts."""
    proc = launch(tmp_path, tiny_t5_dir, "prompt_len=3,4")
    code, out, err = ctrl_c_while_training(proc, job_dir(tmp_path, 3))
    counts = "2 jobs: 0 finished, 0 failed, 1 interrupted, 0 skipped, 1 not started"
    assert_stopped(code, out, err, tmp_path, counts)
    assert (job_dir(tmp_path, 3) / "last/trainer_state.pt").exists()
    assert not (job_dir(tmp_path, 3) / "result.json").exists()
    assert not job_dir(tmp_path, 4).exists()
    assert_resumes(launch(tmp_path, tiny_t5_dir, "prompt_len=3,4"), tmp_path, 2)


def _local(*extra):
    return ("hydra/launcher=local", "hydra.launcher.gpus_per_node=0", *extra)


@pytest.mark.slow  # 5 processes (2 launches, 3 jobs) each importing torch: ~1 min on 2 cores
def test_submitit_local_launcher(tmp_path, tiny_t5_dir):
    """Every job is its own process (through a submitit controller); batches of one: the
    second batch never starts; each job's end is one console line."""
    args = _local("hydra.sweeper.max_batch_size=1", "prompt_len=3,4")
    proc = launch(tmp_path, tiny_t5_dir, *args)
    code, out, err = ctrl_c_while_training(proc, job_dir(tmp_path, 3))
    counts = "2 jobs: 0 finished, 0 failed, 1 interrupted, 0 skipped, 1 not started"
    assert_stopped(code, out, err, tmp_path, counts)
    assert re.search(rf"^{re.escape(str(job_dir(tmp_path, 3)))}: interrupted", out, re.M), out
    assert (job_dir(tmp_path, 3) / "last/trainer_state.pt").exists()
    assert not job_dir(tmp_path, 4).exists()
    out = assert_resumes(launch(tmp_path, tiny_t5_dir, *args), tmp_path, 2)
    for p in (3, 4):  # the launching process says how each job ended, as it ends
        assert re.search(rf"^{re.escape(str(job_dir(tmp_path, p)))}: finished  score=", out, re.M)


@pytest.mark.slow  # 2 launches, each importing torch and training a pack: ~20 s on 2 cores
def test_packed_launcher(tmp_path, tiny_t5_dir):
    """One pack per prompt length (the CPU default): the first pack checkpoints, the second
    never starts."""
    args = ("hydra/launcher=packed", "prompt_len=3,4", "seed=0")
    proc = launch(tmp_path, tiny_t5_dir, *args)
    code, out, err = ctrl_c_while_training(proc, job_dir(tmp_path, 3))
    counts = "2 jobs: 0 finished, 0 failed, 1 interrupted, 0 skipped, 1 not started"
    assert_stopped(code, out, err, tmp_path, counts)
    assert (job_dir(tmp_path, 3) / "last/trainer_state.pt").exists()
    assert not job_dir(tmp_path, 4).exists()
    assert_resumes(launch(tmp_path, tiny_t5_dir, *args), tmp_path, 2)


# --- hydra/launcher=slurm: the stop logic on a fake executor (no SLURM here) ----------------


class FakeSlurmJob:
    """A job of a SLURM array as the launcher sees it (submitit's Job API): it checkpoints and
    leaves its record (as its ``on_job_end`` would) once it sees the sweep's stop file."""

    def __init__(self, summary, num: int, run_dir: Path, state: str):
        self.summary, self.num, self.run_dir, self.state = summary, num, run_dir, state
        self.paths = type("Paths", (), {"stderr": run_dir.parent / f"{num}.err"})

    def done(self) -> bool:
        if self.state == "RUNNING" and self.summary.stop_reason() is not None:
            self.state = "COMPLETED"
            self.summary.record(self.num, self.run_dir, {"status": "interrupted", "error": "x"})
        return self.state in ("COMPLETED", "CANCELLED")

    def cancel(self, check: bool = True) -> None:
        self.state = "CANCELLED"

    def results(self):
        from submitit.core.utils import UncompletedJobError

        if self.state == "CANCELLED":
            raise UncompletedJobError(f"job {self.num} has not produced any output")
        return [None]


def test_slurm_launcher_cancels_pending_jobs_waits_for_running_ones_and_exits_130(
    tmp_path, monkeypatch, capsys
):
    from omegaconf import OmegaConf

    from hydra_plugins.repro_submitit_launcher import submitit_launcher as plugin
    from repro.sweep import SweepSummary

    summary = SweepSummary()
    summary.sweep_id, summary.sweep_dir, summary.pid = "t", str(tmp_path), -1  # jobs elsewhere
    summary.planned = 4
    dirs = [tmp_path / f"job{k}" for k in range(4)]
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path), "subdir": "x"}}})
    launcher = plugin.SlurmLauncher(submitit_folder=str(tmp_path / ".submitit"))
    loader = type("Loader", (), {"load_sweep_config": lambda self, c, o: config})()
    callbacks = type("Callbacks", (), {"callbacks": [summary]})()
    launcher.setup(
        hydra_context=type("Ctx", (), {"callbacks": callbacks, "config_loader": loader})(),
        task_function=None,
        config=config,
    )
    states = ["RUNNING", "RUNNING", "PENDING", "PENDING"]
    jobs = [FakeSlurmJob(summary, k, dirs[k], states[k]) for k in range(4)]

    class Executor:
        def map_array(self, fn, *args):
            summary.request_stop("Ctrl-C")  # as its SIGINT handler does, the array queued
            return jobs

    monkeypatch.setattr(launcher, "_executor", lambda: Executor())
    monkeypatch.setattr(plugin, "POLL_S", 0.001)
    with pytest.raises(SystemExit) as stop:
        launcher.launch([[f"prompt_len={k}"] for k in range(4)], initial_job_idx=0)
    assert stop.value.code == 130
    assert [j.state for j in jobs] == ["COMPLETED", "COMPLETED", "CANCELLED", "CANCELLED"]
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{dirs[0]}: interrupted: x", f"{dirs[1]}: interrupted: x"]
    counts = "4 jobs: 0 finished, 0 failed, 2 interrupted, 0 skipped, 2 not started"
    # (a log handler an earlier in-process Hydra run left on a closed stream may add "--- Logging
    # error ---" blocks to stderr under xdist: only the sweep's own lines are the launcher's)
    assert [x for x in err.splitlines() if x.startswith(("sweep ", "error", "submitit"))] == [
        f"sweep {tmp_path}: stopped by Ctrl-C: {counts}; relaunch the same command to resume"
    ]
    assert "UncompletedJobError" not in err

    # not stopping: a job that left no result is one failed line, not UncompletedJobError
    summary.sweep_id, summary._stop_reason = "u", None
    lost = FakeSlurmJob(summary, 0, dirs[0], "CANCELLED")
    monkeypatch.setattr(Executor, "map_array", lambda self, fn, *args: [lost])
    launcher.launch([["prompt_len=0"]], initial_job_idx=0)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{tmp_path / 'x'}: failed: ended without a result (job 0 ")
    assert summary.read_record(0)["status"] == "failed"
