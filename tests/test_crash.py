"""Crash injection: a job SIGKILLed between any two file operations of its checkpoint, best
prompt, claim and result writes resumes, on relaunch, to exactly the uninterrupted run.

``REPRO_KILL_AT=<point>[:<n>]`` makes the job kill itself at the n-th time it reaches a
``repro.files.fault_point`` (the run's checkpoints come at steps 10, 20 and 30). Each case
checks that the kill happened there (exit -9), that the relaunch exits 0, that every file
parses with no duplicated or torn metrics line and no staging left, and that metrics, losses
and prompts equal the uninterrupted reference bit for bit.

Each case launches the job two or three times: an end-to-end soak, so the whole module is
``slow`` (CI runs it; the default run keeps the protocol's unit tests in tests/test_rundir.py).
"""

import shutil
import signal

import pytest
from test_preemption import (
    assert_intact,
    assert_same_run,
    finish,
    make_reference,
    run_dir_of,
    smoke_args,
    start,
)

from repro.files import KILL_ENV

pytestmark = pytest.mark.slow

# (fault point, occurrence): the gaps between two file operations a normal run passes. (This
# run's best prompt comes at step 10 and never improves, so "publish best: moved aside" is only
# reached in tests/test_rundir.py's protocol tests.)
KILL_POINTS = [
    ("write config.yaml", 1),  # claiming: Hydra's record and the config written, no fingerprint
    ("write fingerprint.json", 1),
    ("write metrics.jsonl", 1),  # a (re)started run cuts metrics.jsonl back to its checkpoint
    ("publish best: files written", 1),
    ("publish best: staged", 1),
    ("publish best: swapped", 1),
    ("publish last: files written", 1),
    ("publish last: staged", 1),
    ("publish last: swapped", 1),
    ("publish last: files written", 2),
    ("publish last: staged", 2),
    ("publish last: moved aside", 1),  # checkpoint 2 of 3: last/ aside, new one staged
    ("publish last: swapped", 2),
    ("publish last: moved aside", 2),  # the final checkpoint (step 30)
    ("write result.json", 1),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_t5_dir):
    return make_reference(tmp_path_factory.mktemp("reference"), tiny_t5_dir)


def kill_then_relaunch(tiny_t5_dir, root, point: str, nth: int, extra=()):
    proc = start(smoke_args(tiny_t5_dir, root, *extra), env_extra={KILL_ENV: f"{point}:{nth}"})
    code, err = finish(proc)
    assert code == -signal.SIGKILL, f"{point}:{nth} was never reached (exit {code}): {err[-1500:]}"
    code, err = finish(start(smoke_args(tiny_t5_dir, root)))
    assert code == 0, f"relaunch after a kill at {point}:{nth} failed: {err[-2000:]}"
    return run_dir_of(root)


@pytest.mark.parametrize(
    ("point", "nth"),
    [pytest.param(p, n, id=f"{p}:{n}") for p, n in KILL_POINTS],
)
def test_kill_between_file_operations_then_relaunch_equals_an_uninterrupted_run(
    tmp_path, tiny_t5_dir, reference, point, nth
):
    run_dir = kill_then_relaunch(tiny_t5_dir, tmp_path, point, nth)
    assert_intact(run_dir)
    assert_same_run(run_dir, reference)


def test_a_kill_during_recovery_is_recovered_too(tmp_path, tiny_t5_dir, reference):
    """Killed with last/ moved aside and the new one staged; the relaunch is killed again while
    it promotes the staged copy; the third launch completes the run."""
    for point in ("publish last: moved aside", "recover last: staging promoted"):
        proc = start(smoke_args(tiny_t5_dir, tmp_path), env_extra={KILL_ENV: point})
        assert finish(proc)[0] == -signal.SIGKILL, point
    code, err = finish(start(smoke_args(tiny_t5_dir, tmp_path)))
    assert code == 0, err[-2000:]
    run_dir = run_dir_of(tmp_path)
    assert_intact(run_dir)
    assert_same_run(run_dir, reference)


def test_leftover_aside_copy_beside_a_whole_checkpoint_resumes(tmp_path, tiny_t5_dir, reference):
    """The issue's reproduction: a kill after the swap but before the old copy was deleted left
    ``.last.old/`` beside ``last/``; every relaunch used to fail with ENOTEMPTY."""
    proc = start(smoke_args(tiny_t5_dir, tmp_path, "trainer.stop_after_steps=10"))
    code, err = finish(proc)
    assert code == 0, err[-2000:]
    run_dir = run_dir_of(tmp_path)
    shutil.copytree(run_dir / "last", run_dir / ".last.old")
    code, err = finish(start(smoke_args(tiny_t5_dir, tmp_path)))
    assert code == 0, err[-2000:]
    assert_intact(run_dir)
    assert_same_run(run_dir, reference)
