"""The run directory as a crash-proof unit (repro/rundir.py): swap protocol, lock, portable
identity, claim rules; and, end to end, two launches of one run and a user's data directory."""

import errno
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_input import (
    ROOT,
    RTE_ROW,
    assert_one_error,
    cli,
    run_cli,
    run_module,
    smoke,
    snapshot,
    write_rte,
)
from test_preemption import (
    assert_intact,
    finish,
    run_dir_of,
    smoke_args,
    start,
    wait_for_step,
)
from test_run import smoke_config

from repro import files, rundir
from repro.files import COMPLETE, publish_dir, recover_dir
from repro.rundir import RunDirError
from repro.tasks.toy import SIZES

# --- the swap protocol: every state a kill can leave ---------------------------------------


def whole(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "data.txt").write_text(version)
    return directory


def test_publish_replaces_a_directory_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "last"
    publish_dir(target, lambda d: (d / "data.txt").write_text("v1"))
    publish_dir(target, lambda d: (d / "data.txt").write_text("v2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert sorted(p.name for p in target.iterdir()) == ["data.txt"]  # the marker is gone
    assert (target / "data.txt").read_text() == "v2"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # killed while writing the new copy: the old one stays
        ({"last": "v1", ".last.tmp": None}, "v1"),
        # killed after the swap, before the old copy was dropped (the ENOTEMPTY case)
        ({"last": "v2", ".last.old": "v1"}, "v2"),
        # killed with the old copy aside and the new one complete: the new one
        ({".last.old": "v1", ".last.tmp": "v2"}, "v2"),
        # killed with the old copy aside and the new one incomplete: the old one
        ({".last.old": "v1", ".last.tmp": None}, "v1"),
        # killed while writing the very first copy: nothing
        ({".last.tmp": None}, None),
    ],
)
def test_recover_leaves_a_whole_directory_or_none(tmp_path, state, expected):
    for name, version in state.items():
        d = whole(tmp_path / name, version or "partial")
        if name == ".last.tmp" and version is not None:
            (d / COMPLETE).touch()
    recover_dir(tmp_path / "last")
    left = sorted(p.name for p in tmp_path.iterdir())
    if expected is None:
        assert left == []
    else:
        assert left == ["last"]
        assert (tmp_path / "last" / "data.txt").read_text() == expected
        assert not (tmp_path / "last" / COMPLETE).exists()
    # and a new copy can be published from that state
    publish_dir(tmp_path / "last", lambda d: (d / "data.txt").write_text("v3"))
    assert (tmp_path / "last" / "data.txt").read_text() == "v3"


def test_a_failing_write_leaves_the_old_copy(tmp_path):
    target = whole(tmp_path / "last", "v1")

    def fail(directory):
        (directory / "data.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_dir(target, fail)
    recover_dir(target)
    assert (target / "data.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


# --- the lock -----------------------------------------------------------------------------


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    busy = pytest.raises(RunDirError, match=rf"is in use by pid {os.getpid()} on ")
    with rundir.locked(tmp_path), busy, rundir.locked(tmp_path):
        pass
    with rundir.locked(tmp_path):  # released on exit: the next launch gets it
        pass


# --- identity -----------------------------------------------------------------------------


def test_fingerprint_does_not_depend_on_where_the_cache_or_the_data_lie(tmp_path, tiny_t5_dir):
    a = smoke_config(tmp_path / "a", tiny_t5_dir)
    b = smoke_config(tmp_path / "b", tiny_t5_dir)
    assert a.paths.cache_dir != b.paths.cache_dir
    assert rundir.fingerprint(a) == rundir.fingerprint(b)
    # a user's data: the same files elsewhere are the same run; other content is not
    one = write_rte(tmp_path / "one", [RTE_ROW] * 4)
    two = Path(shutil.copytree(one, tmp_path / "two"))
    fps = [
        rundir.fingerprint(smoke_config(tmp_path, tiny_t5_dir, "task=rte", f"task.data_dir={d}"))
        for d in (one, two)
    ]
    assert fps[0] == fps[1]
    assert set(fps[0]["task"]["data_dir"]["rte"]) == {"train", "validation"}
    rows = [json.loads(x) for x in (two / "train.jsonl").read_text().splitlines()]
    write_rte(two, [{**rows[0], "premise": "Another premise."}] * 4, splits=("train",))
    changed = rundir.fingerprint(
        smoke_config(tmp_path, tiny_t5_dir, "task=rte", f"task.data_dir={two}")
    )
    assert rundir.diff_keys(fps[0], changed) == ["task.data_dir.rte.train"]


# --- end to end ----------------------------------------------------------------------------


def wait_for_lock_holder(run_dir: Path, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / ".lock").exists() or not (run_dir / ".lock").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "the first launch never ran"
        time.sleep(0.01)


@pytest.mark.slow  # two launching processes at once: ~15 s on 2 cores
def test_two_launches_of_one_run_the_second_refuses_and_nothing_is_duplicated(
    tmp_path, tiny_t5_dir
):
    # The first launch trains until it is stopped, so the second always meets it running.
    args = smoke_args(tiny_t5_dir, tmp_path, "trainer.steps=1000000", "trainer.eval_every=500")
    first = start(args)
    run_dir = tmp_path / "runs" / "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    wait_for_lock_holder(run_dir, first)
    wait_for_step(run_dir / "metrics.jsonl", 1, first)
    code, err = finish(start(args))
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"is in use by pid {first.pid} on " in lines[0]
    first.send_signal(signal.SIGTERM)  # checkpoint and stop (exit 75: requeue)
    code, err = finish(first)
    assert code == 75, err[-2000:]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert keys and len(keys) == len(set(keys)), keys
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers and (run_dir / "last" / "trainer_state.pt").exists()


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_the_suite_never_writes_into_a_data_dir_it_was_given(tmp_path, tiny_t5_dir):
    """A user's own train.jsonl + val.jsonl for a toy task are read, never overwritten."""
    data = tmp_path / "mine"
    data.mkdir()
    rows = [{"sentence": f"the cat {w}", "label": i % 2, "idx": i} for i, w in enumerate("ab" * 8)]
    for name in ("train.jsonl", "val.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(data)
    cfg = ["trainer.steps=2", "trainer.eval_every=2", f"task.data_dir={data}"]
    code, err = finish(start(smoke_args(tiny_t5_dir, tmp_path, *cfg)))
    assert code == 0, err[-2000:]
    assert snapshot(data) == before
    result = json.loads((run_dir_of(tmp_path) / "result.json").read_text())
    assert (result["n_train"], result["n_eval"]) == (16, 16)  # the user's files, not generated
    assert SIZES["train"] != 16


def test_a_failed_launch_does_not_claim_its_directory(tmp_path, tiny_t5_dir, monkeypatch, capsys):
    """Failed before its first step (labels outside the task's set): the corrected command, even
    with another config, runs in the same directory; its success clears the stale error.txt."""
    bad = write_rte(tmp_path / "rte", [{**RTE_ROW, "label": 7}, RTE_ROW])
    args = smoke(tmp_path, tiny_t5_dir, "task=rte", f"task.data_dir={bad}")
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, "label(s) 7 outside the task's label set")
    run_dir = tmp_path / "runs" / "rte-tiny-lm_adapt100k-p20-class_label-s0"
    assert (run_dir / "error.txt").exists() and not (run_dir / "fingerprint.json").exists()
    assert not (run_dir / ".hydra").exists()

    write_rte(bad, [RTE_ROW, {**RTE_ROW, "label": 1}])
    fixed = [*args, "trainer.steps=3", "trainer.eval_every=3"]  # another config
    code, err = cli(monkeypatch, capsys, *fixed)
    assert code == 0, err
    assert (run_dir / "fingerprint.json").exists() and (run_dir / ".hydra/overrides.yaml").exists()
    assert not (run_dir / "error.txt").exists()
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 3


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_ctrl_c_checkpoints_says_one_line_exits_130_and_resumes(tmp_path, tiny_t5_dir):
    proc = start(smoke_args(tiny_t5_dir, tmp_path))
    run_dir = tmp_path / "runs" / "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"
    while not (run_dir / "metrics.jsonl").exists():
        assert proc.poll() is None
        time.sleep(0.01)
    wait_for_step(run_dir / "metrics.jsonl", 12, proc)
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "received SIGINT" in err
    assert (run_dir / "last" / "trainer_state.pt").exists()
    code, err = finish(start(smoke_args(tiny_t5_dir, tmp_path)))
    assert code == 0, err[-2000:]
    assert_intact(run_dir)


def test_a_corrupt_checkpoint_file_is_named(tmp_path, tiny_t5_dir, monkeypatch, capsys):
    args = smoke(tmp_path, tiny_t5_dir, "trainer.steps=4", "trainer.stop_after_steps=2")
    assert cli(monkeypatch, capsys, *args)[0] == 0
    state = tmp_path / "runs/toy_keyword-tiny-lm_adapt100k-p20-class_label-s0/last/trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # torn
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, f"checkpoint file {state} cannot be read", "delete")


STOPPED = ("trainer.steps=4", "trainer.stop_after_steps=2")  # last/ and best/ at step 2
RUN = "runs/toy_keyword-tiny-lm_adapt100k-p20-class_label-s0"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, tiny_t5_dir) -> Path:
    """A smoke run stopped at step 2 (resumable), made once for the tests that spoil a copy."""
    root = tmp_path_factory.mktemp("stopped")
    proc = run_module("repro.run", *smoke(root, tiny_t5_dir, *STOPPED))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / RUN


def torn(data: bytes) -> bytes:
    return data[:60]


def noise(data: bytes) -> bytes:
    return bytes(random.Random(0).randrange(256) for _ in range(200))


CORRUPT_CASES = [
    # (the file spoilt, how, what the one line names, what it says to delete)
    ("last/prompt.safetensors", torn, "checkpoint file {run}/last/prompt.safetensors", "{run}/last"),
    ("last/prompt.safetensors", noise, "checkpoint file {run}/last/prompt.safetensors", "{run}/last"),
    ("last/prompt.json", noise, "checkpoint file {run}/last/prompt.json", "{run}/last"),
    ("best/prompt.safetensors", torn, "checkpoint file {run}/best/prompt.safetensors", "{run}/best and {run}/last"),
    ("best/prompt.safetensors", noise, "checkpoint file {run}/best/prompt.safetensors", "{run}/best and {run}/last"),
    ("metrics.jsonl", noise, "metrics file {run}/metrics.jsonl is corrupt at line 1", "{run} to train the run again"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "spoil", "named", "delete"),
    CORRUPT_CASES,
    ids=[f"{c[0]}-{c[1].__name__}" for c in CORRUPT_CASES],
)
def test_a_corrupt_file_of_a_stopped_run_is_named_with_what_to_do(
    stopped_run, tmp_path, tiny_t5_dir, monkeypatch, capsys, name, spoil, named, delete
):
    """Before: safetensors' bare "Error while deserializing header" (no path, user_error false),
    a bare "'utf-8' codec can't decode" for metrics.jsonl, prompt.safetensors named for a bad
    prompt.json, and a torn best/ went unnoticed by the resume."""
    run = tmp_path / RUN
    shutil.copytree(stopped_run, run)
    (run / name).write_bytes(spoil((run / name).read_bytes()))
    code, err = cli(monkeypatch, capsys, *smoke(tmp_path, tiny_t5_dir, *STOPPED))
    line = assert_one_error(code, err, named.format(run=run), f"delete {delete.format(run=run)}")
    assert "cannot be read" in line or "corrupt" in line
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed" and result["user_error"] is True


def test_a_relaunched_finished_run_is_skipped_and_its_files_left_untouched(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """The relaunch appended a "skipped" line to the finished run's run.log before."""
    args = smoke(tmp_path, tiny_t5_dir)
    assert cli(monkeypatch, capsys, *args)[0] == 0
    run = tmp_path / RUN
    before = {k: v for k, v in snapshot(run).items() if k != ".lock"}
    assert "run.log" in before
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "(already finished: skipped)" in out
    # every byte and mtime; only .lock names the last process that held the directory
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before


def test_a_model_path_that_does_not_exist_is_never_built(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """experiment=smoke builds its random tiny model only at its default place in the cache."""
    nope = tmp_path / "nope"
    args = smoke(tmp_path, tiny_t5_dir, f"model.path={nope}")
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, f"model.path={nope} holds no checkpoint", "tiny-t5")
    assert not nope.exists()


# --- a read-only run directory, a full disk ----------------------------------------------------


def read_only_prefix(directory: Path) -> list[str] | None:
    """A command prefix under which ``directory`` is really read-only, or None if this machine
    cannot make one: a read-only bind mount in a mount namespace of its own (root, where file
    permissions are ignored), else the directory's write bits taken away (any other user)."""
    if os.geteuid() != 0:
        return []  # the caller chmods
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    prefix = [unshare, "-m", "sh", "-c", script, str(directory)]
    probe = [*prefix, "sh", "-c", f'! touch "{directory}/.probe" 2>/dev/null']
    ok = subprocess.run(probe, capture_output=True, check=False).returncode == 0
    return prefix if ok else None


def relaunch_read_only(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m repro.run *args`` with ``directory`` read-only (see :func:`read_only_prefix`)."""
    prefix = read_only_prefix(directory)
    if prefix is None:
        pytest.skip("root without a mount namespace: no way to make a directory read-only")
    modes = {p: p.stat().st_mode for p in [directory, *directory.rglob("*")]}
    if not prefix:
        for path, mode in modes.items():
            path.chmod(mode & ~0o222)
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        command = [*prefix, sys.executable, "-m", "repro.run", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@pytest.mark.slow  # 8-27 s in the default run (CI runs it)
def test_a_read_only_run_directory_skips_a_finished_run_and_names_itself_otherwise(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """On a read-only mount Hydra's logging failed first: "error: Unable to configure handler
    'file'", for a finished run too, which needs no write. Here the runs directory is made
    read-only for real (a read-only bind mount as root, the write bits otherwise)."""
    runs = tmp_path / "runs"
    finished, stopped = smoke(tmp_path, tiny_t5_dir), smoke(tmp_path, tiny_t5_dir, "seed=1")
    assert cli(monkeypatch, capsys, *finished)[0] == 0
    assert (
        cli(monkeypatch, capsys, *stopped, "trainer.steps=4", "trainer.stop_after_steps=2")[0] == 0
    )
    before = snapshot(runs)
    proc = relaunch_read_only(runs, *finished)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{tmp_path / RUN}: finished (already finished: skipped)" in proc.stdout
    unfinished = runs / "toy_keyword-tiny-lm_adapt100k-p20-class_label-s1"
    proc = relaunch_read_only(runs, *stopped, "trainer.steps=4")
    line = assert_one_error(proc.returncode, proc.stderr, f"{unfinished} is read-only")
    assert "holds an unfinished run" in line and "make it writable" in line
    assert snapshot(runs) == before  # nothing written, .lock included


def test_a_read_only_run_directory_in_process(tmp_path, tiny_t5_dir, monkeypatch, capsys):
    """The same as a machine without mount namespaces sees it, simulated: the directory says it
    cannot be written (os.access) and run.log cannot be opened (EROFS)."""
    args = smoke(tmp_path, tiny_t5_dir)
    assert cli(monkeypatch, capsys, *args)[0] == 0
    runs = tmp_path / "runs"
    before = snapshot(runs)
    access, open_log = os.access, rundir.RunLog._open

    def read_only(path, mode, *a, **k):
        inside = Path(path).resolve().is_relative_to(runs.resolve())
        return False if inside and mode & os.W_OK else access(path, mode, *a, **k)

    def refuse(self):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.baseFilename)

    monkeypatch.setattr(os, "access", read_only)
    monkeypatch.setattr(rundir.RunLog, "_open", refuse)
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "(already finished: skipped)" in out
    code, err = cli(monkeypatch, capsys, *args, "seed=1")
    assert_one_error(code, err, "-s1 is read-only and holds no run yet", "make it writable")
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(rundir.RunLog, "_open", open_log)
    assert {k: v for k, v in snapshot(runs).items() if "-s1/" not in k} == before


def test_a_disk_full_failure_leaves_no_temp_file_once_the_relaunch_succeeds(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """After a disk-full failure the relaunch succeeded but left .error.txt.tmp in the finished
    run directory. The disk fills as the first checkpoint is staged: every later write fails
    (ENOSPC) once its file is created, error.txt's included."""
    real_open, full = open, []

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        if Path(file).name == COMPLETE:
            full.append(file)
        if full and any(c in mode for c in "wax+"):
            real_open(file, mode, *args, **kwargs).close()  # created; its data do not fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    args = smoke(tmp_path, tiny_t5_dir, "trainer.steps=4")
    run = tmp_path / RUN
    with monkeypatch.context() as patch:
        patch.setattr(files, "open", open_on_a_full_disk, raising=False)
        code, err = cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, f"no space left on the device of {run}; free some space and run")
    assert not [p for p in run.rglob("*.tmp") if p.is_file()]  # a failed write leaves nothing
    (run / ".error.txt.tmp").write_text("Trace")  # what a kill before its rename leaves
    code, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads((run / "result.json").read_text())["status"] == "finished"
    assert not [p for p in run.rglob("*.tmp") if p.is_file()]
    assert not (run / "error.txt").exists()


# --- a launch that never claims its directory leaves nothing there -----------------------------


def test_an_unclaimed_directory_keeps_nothing_of_the_launch(tmp_path):
    """Its .lock goes; with nothing else but run.log, the directory goes too; anything that is
    a run's (a claim, a lock held by another launch, a sweep's record) stays."""
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / rundir.LOCK).write_text("pid 1")
    (alone / "run.log").write_text("[repro.run] memory plan\n")
    assert rundir.leave_nothing_unclaimed(alone) and not alone.exists()

    record = tmp_path / "record"  # a sweep's failed job: repro.run wrote its result.json
    record.mkdir()
    for name in (rundir.LOCK, "run.log", rundir.RESULT):
        (record / name).write_text("{}")
    assert not rundir.leave_nothing_unclaimed(record)
    assert sorted(p.name for p in record.iterdir()) == [rundir.RESULT, "run.log"]

    claimed = tmp_path / "claimed"
    claimed.mkdir()
    for name in (rundir.LOCK, "run.log", rundir.FINGERPRINT):
        (claimed / name).write_text("{}")
    empty = tmp_path / "empty"  # no job locked it (a dry run): Hydra's directory, untouched
    empty.mkdir()
    for untouched in (claimed, empty):
        before = sorted(p.name for p in untouched.iterdir())
        assert not rundir.leave_nothing_unclaimed(untouched)
        assert sorted(p.name for p in untouched.iterdir()) == before

    busy = tmp_path / "busy"  # another launch holds the lock: the directory is its
    with rundir.locked(busy):
        (busy / "run.log").write_text("")
        assert not rundir.leave_nothing_unclaimed(busy)
        assert sorted(p.name for p in busy.iterdir()) == [rundir.LOCK, "run.log"]


def _exit_closes_the_run_log() -> None:
    """What the process's exit does to a launch run in this process (logging.shutdown): its
    run.log handler closes, and with it goes what an unclaimed directory held."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, rundir.RunLog):
            handler.close()


def test_a_launch_failing_before_its_claim_leaves_no_run_directory(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """A missing dataset (refused once the directory was locked) and a checkpoint that does not
    load (after the memory plan was logged to run.log) left runs/<name>/ with .lock (and run.log)
    behind."""
    from test_bad_input import assert_one_error, cli, smoke

    bad_model = tmp_path / "bad_model"
    bad_model.mkdir()
    (bad_model / "config.json").write_text('{"model_type": "t5"}')
    for model, data in ((tiny_t5_dir, tmp_path / "missing"), (bad_model, None)):
        args = smoke(tmp_path, model, *([f"task.data_dir={data}"] if data else []))
        code, err = cli(monkeypatch, capsys, *args)  # refused once locked; once the plan logged
        assert_one_error(code, err)
        _exit_closes_the_run_log()
        assert list((tmp_path / "runs").iterdir()) == []


def test_a_refused_value_and_a_dry_run_leave_no_run_directory(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    """Hydra makes runs/<name>/ before the job sees its config: a value refused then, and a dry
    run, leave it empty, and it goes."""
    from test_bad_input import cli, smoke

    code, err = cli(monkeypatch, capsys, *smoke(tmp_path, tiny_t5_dir, "prompt_len=0"))
    assert code == 2 and "prompt_len must be an integer >= 1; got 0" in err
    assert list((tmp_path / "runs").iterdir()) == []
    code, err = cli(monkeypatch, capsys, *smoke(tmp_path, tiny_t5_dir, "dry_run=true"))
    assert code == 0, err
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_sweep_job_failing_before_its_claim_keeps_only_its_record(
    tmp_path, tiny_t5_dir, monkeypatch, capsys
):
    from test_bad_input import cli, smoke

    missing = f"task.data_dir={tmp_path / 'missing'}"
    code, err = cli(
        monkeypatch, capsys, "-m", *smoke(tmp_path, tiny_t5_dir, missing, "prompt_len=3,4")
    )
    assert code == 1, err[-2000:]
    jobs = sorted(p for p in (tmp_path / "multirun/smoke").iterdir() if p.is_dir())
    assert [p.name.split("-")[3] for p in jobs] == ["p3", "p4"]
    for job in jobs:
        assert [p.name for p in job.iterdir()] == [rundir.RESULT]
        assert json.loads((job / rundir.RESULT).read_text())["status"] == "failed"
