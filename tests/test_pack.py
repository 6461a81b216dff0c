"""Packed sweeps (repro/pack.py, hydra/launcher=packed): every member of a pack trains as its solo
run does — same loss and gradient per row, same eval metrics — keeps its own run directory,
resumes after a kill, and a finished member stays done."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_config import compose_config
from test_preemption import read_jsonl

from repro.backbone import load_backbone
from repro.files import KILL_ENV
from repro.job.experiment import run_experiment
from repro.model import PromptedT5
from repro.pack.job import PackJob, run_pack
from repro.pack.plan import describe_fit, pack_key, pack_memory, packs_by_length, plan_packs
from repro.packed_trainer import PackedT5, pack_batch
from repro.prompts import SoftPrompt

ROOT = Path(__file__).resolve().parents[1]

# --- the packed model: per row, what a solo model computes -----------------------------------


def test_each_members_loss_gradient_and_greedy_output_are_its_solo_models(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    torch.manual_seed(0)
    prompts = [SoftPrompt(torch.randn(p, 32) * 0.5) for p in (1, 7, 3)]
    batches = []
    for m, (t, lab) in enumerate([(5, 2), (9, 3), (4, 1)]):
        ids = torch.randint(3, 400, (2 + m, t))
        mask = torch.ones_like(ids)
        mask[0, t - 2 :] = 0  # one right-padded row per member
        labels = torch.randint(3, 400, (2 + m, lab))
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    packed = PackedT5(backbone, prompts)
    batch = pack_batch(list(enumerate(batches)), pad_id=0)
    losses = packed(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["member"])
    sum(losses.values()).backward()
    packed_grads = [p.weight.grad.clone() for p in prompts]
    for m, (prompt, solo_batch) in enumerate(zip(prompts, batches, strict=True)):
        prompt.weight.grad = None
        solo = PromptedT5(backbone, prompt)
        loss, _ = solo(solo_batch["input_ids"], solo_batch["attention_mask"], solo_batch["labels"])
        loss.backward()
        assert losses[m].item() == pytest.approx(loss.item(), abs=1e-5)
        torch.testing.assert_close(packed_grads[m], prompt.weight.grad, atol=1e-6, rtol=1e-5)
        # greedy decoding of the member's rows inside the pack = its solo decoding
        with packed.rows(batch["member"]):
            out = packed.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=4)
        rows = batch["member"] == m
        want = solo.generate(solo_batch["input_ids"], solo_batch["attention_mask"], 4)
        assert out[rows][:, : want.shape[1]].tolist() == want.tolist()


def test_the_prompt_of_a_shorter_member_is_padded_on_its_left_and_masked(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    prompts = [SoftPrompt(torch.ones(2, 32)), SoftPrompt(torch.full((5, 32), 2.0))]
    packed = PackedT5(backbone, prompts)
    ids = torch.tensor([[5, 6, 1], [7, 1, 0]])
    with packed.rows(torch.tensor([0, 1])):
        embeds, mask = packed.encoder_inputs(ids, torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert embeds.shape == (2, 5 + 3, 32)
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0]]
    assert embeds[0, :3].abs().sum() == 0 and (embeds[0, 3:5] == 1).all()
    assert (embeds[1, :5] == 2).all()


# --- which jobs share a pack -----------------------------------------------------------------


def test_jobs_share_a_pack_when_only_their_prompts_differ():
    base = ["experiment=smoke"]
    a = compose_config(*base, "prompt_len=1", "seed=0", "init=random_uniform")
    b = compose_config(*base, "prompt_len=20", "seed=2", "trainer.optimizer.lr=0.1")
    assert pack_key(a) == pack_key(b)
    assert plan_packs([a, b]) == [[0, 1]]
    assert plan_packs([a, b], by_length=True) == [[0], [1]]  # 1 and 20 prompt vectors
    assert not packs_by_length([compose_config(*base, "trainer.device=cuda")])  # none here
    assert packs_by_length([a], choice=False) is False
    for other in ("task=toy_polarity", "trainer.batch_size=8", "model.dropout=0.1"):
        assert pack_key(compose_config(*base, other)) != pack_key(a), other
    # the paper sweep of Figure 3(a) on T5-Small (5 lengths x 3 seeds, one backbone): split by
    # repro.cost's memory model into packs that each fit the GPU, every job in one pack
    small = [
        compose_config("model=small", "task=rte", f"prompt_len={p}", f"seed={s}")
        for p in (1, 5, 20, 100, 150)
        for s in (0, 1, 2)
    ]
    assert pack_memory(small) > 80e9
    packs = plan_packs(small)
    assert sorted(i for pack in packs for i in pack) == list(range(15))
    assert 1 < len(packs) < 15
    assert all(pack_memory([small[i] for i in pack]) <= 80e9 for pack in packs)
    assert max(map(len, plan_packs(small, max_members=2))) == 2
    assert len(plan_packs(small, budget_gb=1000)) == 1


def test_only_prompts_pack_a_model_tuning_job_runs_alone():
    """Model tuning trains the backbone the members would share: each of its jobs is a pack of
    one (run on the solo path), and dry_run says so instead of a member count."""
    model = [compose_config("method=model", "model=small", "task=rte", f"seed={s}") for s in (0, 1)]
    assert pack_key(model[0]) != pack_key(model[1])
    assert plan_packs(model) == [[0], [1]]
    assert (
        describe_fit(model[0]) == "packing: method=model trains the backbone; its jobs never pack"
    )


# --- whole jobs: a pack of 5 against 5 solo runs ---------------------------------------------

STEPS = 20
MEMBERS = [(1, 0, "class_label"), (5, 1, "random_uniform"), (20, 2, "sampled_vocab"),
           (7, 3, "class_label"), (12, 4, "random_uniform")]  # fmt: skip


def member_configs(tiny_t5_dir, root: Path, members=MEMBERS, steps=STEPS, *extra: str):
    return [
        compose_config(
            "experiment=smoke",
            f"model.path={tiny_t5_dir}",
            f"paths.root={root}",
            f"paths.cache_dir={root / 'cache'}",
            f"trainer.steps={steps}",
            "trainer.eval_every=5",
            "trainer.log_every=1",
            "task.max_eval_examples=16",
            f"prompt_len={p}",
            f"seed={s}",
            f"init={i}",
            *extra,
        )
        for p, s, i in members
    ]


@pytest.fixture(scope="module")
def solo_runs(tmp_path_factory, tiny_t5_dir):
    root = tmp_path_factory.mktemp("solo")
    cfgs = member_configs(tiny_t5_dir, root)
    for cfg in cfgs:
        assert run_experiment(cfg, root / "runs" / cfg.name)["status"] == "finished"
    return root / "runs"


def assert_same_as_solo(run_dir: Path, solo: Path) -> None:
    """Every eval's metrics to 1e-5, best step and score, and the step-by-step losses to float
    rounding (the left-padded prompt shifts each sum's vector lanes: ~1e-7, grown over the
    steps at lr 0.3 to at most ~1e-3; docs/packing.md)."""
    mine, ref = (json.loads((d / "result.json").read_text()) for d in (run_dir, solo))
    assert (mine["status"], mine["best_step"], mine["steps"]) == (
        ref["status"],
        ref["best_step"],
        ref["steps"],
    )
    assert mine["score"] == pytest.approx(ref["score"], abs=1e-5)
    assert mine["precision"] == ref["precision"] == "fp32"  # trainer.precision=auto on a CPU
    records = [read_jsonl(d / "metrics.jsonl") for d in (run_dir, solo)]
    evals = [[r for r in rs if r["kind"] == "eval"] for rs in records]
    assert [r["step"] for r in evals[0]] == [r["step"] for r in evals[1]]
    for a, b in zip(*evals, strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], abs=1e-5) for k in a), (a, b)
    losses = [[(r["step"], r["loss"]) for r in rs if r["kind"] == "train"] for rs in records]
    assert [s for s, _ in losses[0]] == list(range(1, STEPS + 1))
    for (_, a), (_, b) in zip(*losses, strict=True):
        assert a == pytest.approx(b, rel=1e-3)
    for name in ("config.yaml", "fingerprint.json", "best/prompt.safetensors", "last"):
        assert (run_dir / name).exists(), name


@pytest.mark.slow
def test_every_member_of_a_pack_of_five_ends_as_its_solo_run(tmp_path, tiny_t5_dir, solo_runs):
    jobs = [PackJob(c, tmp_path / "runs" / c.name) for c in member_configs(tiny_t5_dir, tmp_path)]
    run_pack(jobs)
    for job in jobs:
        assert job.summary["status"] == "finished" and job.error is None
        result = json.loads((job.run_dir / "result.json").read_text())
        assert result["pack_size"] == 5 and result["grad_accum"] == 1
        # who it shared its dropout stream with: the pack in order, seeded by the first member
        assert result["pack_members"] == [j.cfg.name for j in jobs]
        assert result["pack_dropout_seed"] == jobs[0].cfg.seed
        assert_same_as_solo(job.run_dir, solo_runs / job.cfg.name)
    # requeued: every member is done and stays so (nothing is rewritten)
    stamps = {j.run_dir: (j.run_dir / "result.json").stat().st_mtime_ns for j in jobs}
    again = [PackJob(j.cfg, j.run_dir) for j in jobs]
    run_pack(again)
    assert all(j.summary.get("skipped") for j in again)
    assert stamps == {j.run_dir: (j.run_dir / "result.json").stat().st_mtime_ns for j in jobs}


PACK_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_pack import member_configs
from repro.pack.job import PackJob, run_pack
root = Path({root!r})
jobs = run_pack([PackJob(c, root / "runs" / c.name) for c in member_configs({tiny!r}, root)])
sys.exit(0 if all(j.summary["status"] == "finished" for j in jobs) else 1)
"""


def run_pack_process(tiny_t5_dir, root: Path, env_extra=None) -> subprocess.CompletedProcess:
    script = PACK_SCRIPT.format(tests=str(ROOT / "tests"), root=str(root), tiny=str(tiny_t5_dir))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "publish last: staged:3",  # members 1-2 checkpointed step 5, members 3-5 not: out of step
        # step 10: members 1-2 swapped in their new last/, member 3 killed with its old one
        # moved aside (repaired on relaunch), members 4-5 still at step 5
        "publish last: moved aside:3",
    ],
)
def test_a_pack_killed_mid_run_resumes_every_member_to_its_solo_run(
    tmp_path, tiny_t5_dir, solo_runs, point
):
    killed = run_pack_process(tiny_t5_dir, tmp_path, {KILL_ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_pack_process(tiny_t5_dir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for cfg in member_configs(tiny_t5_dir, tmp_path):
        run_dir = tmp_path / "runs" / cfg.name
        keys = [(r["kind"], r["step"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
        assert len(keys) == len(set(keys)), "a metrics line written twice"
        assert_same_as_solo(run_dir, solo_runs / cfg.name)


# --- the Hydra interface ---------------------------------------------------------------------


def packed_cli(tmp_path, tiny_t5_dir, *extra):
    from test_run import run_cli

    return run_cli(
        "-m",
        "hydra/launcher=packed",
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "task.max_eval_examples=16",
        *extra,
        cwd=ROOT,
    )


@pytest.mark.slow  # a packed sweep in its own process: ~12 s
def test_the_packed_launcher_prints_the_grouping_before_it_starts(tmp_path, tiny_t5_dir):
    sweep = ("dry_run=true", "prompt_len=1,5", "seed=0,1", "task=toy_keyword,toy_polarity")
    # on this CPU machine packs hold one prompt length each by default (by_length=auto) ...
    by_length = packed_cli(tmp_path, tiny_t5_dir, *sweep)
    assert by_length.returncode == 0, by_length.stderr[-2000:]
    assert "packed sweep: 8 jobs in 4 packs (one prompt length per pack" in by_length.stdout
    assert "p1/class_label/s0, p1/class_label/s1\n" in by_length.stdout
    # ... and mix them when asked (what a GPU machine does by default)
    proc = packed_cli(tmp_path, tiny_t5_dir, *sweep, "hydra.launcher.by_length=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "packed sweep: 8 jobs in 2 packs\n" in proc.stdout
    assert "pack 1: 4 members [model=tiny objective=lm_adapt" in proc.stdout
    assert "task=toy_polarity]" in proc.stdout
    assert "8 dry run" in proc.stdout
    assert not (
        tmp_path / "multirun" / "smoke" / "toy_keyword-tiny-lm_adapt100k-p1-class_label-s0"
    ).exists()


@pytest.mark.slow
def test_a_packed_sweep_gives_each_job_its_own_finished_run_and_counts_them(tmp_path, tiny_t5_dir):
    args = ("trainer.steps=6", "trainer.eval_every=3", "prompt_len=1,5", "seed=0,1")
    proc = packed_cli(tmp_path, tiny_t5_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 jobs: 4 finished, 0 failed, 0 interrupted, 0 skipped" in proc.stdout
    runs = sorted((tmp_path / "multirun" / "smoke").glob("toy_keyword-*"))
    assert len(runs) == 4
    for run in runs:
        assert (run / ".hydra" / "overrides.yaml").exists()
        assert json.loads((run / "result.json").read_text())["status"] == "finished"
    again = packed_cli(tmp_path, tiny_t5_dir, *args)
    assert "4 jobs: 0 finished, 0 failed, 0 interrupted, 4 skipped" in again.stdout


@pytest.mark.slow
def test_bench_pack_runs_and_prints_a_ratio_per_pack_size(capsys):
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location(
        "bench_pack", ROOT / "benchmarks" / "bench_pack.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = "--sizes 1,2 --steps 1 --batch 2 --input-len 8 --target-len 2 --threads 1"
    assert bench.main(args.split()) == 0
    out = capsys.readouterr().out
    # each ratio is packed / solo of the rows printed above it (step s to 3 decimals, peak MB
    # to 0: the ratio must lie within what that rounding allows), not solo / packed
    rows = {
        (int(k), mode): (float(step), float(peak))
        for k, mode, step, peak in re.findall(
            r"^ +(\d+) +(solo|packed) +([\d.]+) +[\d.]+ +(\d+)", out, re.M
        )
    }
    ratios = re.findall(r"k= ?(\d+): time (\d+\.\d+)\s+memory (\d+\.\d+)", out)
    assert [k for k, _, _ in ratios] == ["1", "2"] and len(rows) == 4, out
    for k, time_ratio, memory_ratio in ratios:
        for ratio, at, half in ((time_ratio, 0, 5e-4), (memory_ratio, 1, 0.5)):
            packed, solo = rows[int(k), "packed"][at], rows[int(k), "solo"][at]
            low, high = (packed - half) / (solo + half), (packed + half) / max(solo - half, 1e-9)
            assert low - 0.01 <= float(ratio) <= high + 0.01, (k, ratio, packed, solo)
    # the packed step did each member's work: its first-step losses are the solo steps' ones
    same = re.findall(r"k= ?(\d+): max \|packed - solo\| = (\S+)", out)
    assert [k for k, _ in same] == ["1", "2"], out
    assert all(float(diff) < 1e-5 for _, diff in same), same


# --- a packed sweep preempted: every member checkpoints, the sweep exits for requeue ---------

# 4 members (prompt lengths 1 and 5, seeds 0 and 1); the p1/s0 one is finished before launch
PREEMPTED_SWEEP = (
    "hydra.launcher.by_length=false",  # one pack of both lengths (left-padded), not two
    "prompt_len=1,5",
    "seed=0,1",
    f"trainer.steps={STEPS}",
    "trainer.eval_every=5",
    "trainer.log_every=1",
)
DONE = "toy_keyword-tiny-lm_adapt100k-p1-class_label-s0"


def packed_sweep_args(tiny_t5_dir, root: Path) -> list[str]:
    return [
        "-m",
        "hydra/launcher=packed",
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={root}",
        f"paths.cache_dir={root / 'cache'}",
        "task.max_eval_examples=16",
        *PREEMPTED_SWEEP,
    ]


@pytest.fixture(scope="module")
def packed_reference(tmp_path_factory, tiny_t5_dir) -> Path:
    """The same packed sweep, uninterrupted: its sweep directory."""
    from test_preemption import finish, start

    root = tmp_path_factory.mktemp("packed_reference")
    code, err = finish(start(packed_sweep_args(tiny_t5_dir, root)))
    assert code == 0, err[-2000:]
    return root / "multirun" / "smoke"


def files_of(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, but .lock's (each launch locks the directory, skip or not,
    and writes who holds it)."""
    return {
        str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signame", "code"),
    [("SIGTERM", 75), ("SIGUSR1", 75), ("SIGUSR2", 75), ("SIGINT", 130)],
)
def test_a_preempted_packed_sweep_checkpoints_every_member_and_resumes_to_the_same_numbers(
    tmp_path, tiny_t5_dir, packed_reference, signame, code
):
    """The signal (repro.job.preemption.PREEMPTION_SIGNALS) reaches the pack mid-training: every running
    member writes last/ at the same step, none a result.json, the finished member is not
    touched, the sweep exits with the code the docs promise; the same command then resumes every
    member to the uninterrupted sweep's numbers and skips the finished one. SLURM's signals are
    sent again and again until the process exits (a second one during the checkpoint changes
    nothing); a second Ctrl-C aborts at once by design, so SIGINT is sent once."""
    import random
    import shutil
    import time

    from test_preemption import start, wait_for_step

    sweep = tmp_path / "multirun" / "smoke"
    shutil.copytree(packed_reference / DONE, sweep / DONE)  # finished before the launch
    done = files_of(sweep / DONE)
    args = packed_sweep_args(tiny_t5_dir, tmp_path)

    k = random.randint(1, 12)
    proc = start(args)
    names = [p.name for p in sorted(packed_reference.glob("toy_keyword-*"))]
    live = [sweep / n for n in names if n != DONE]
    assert len(live) == 3
    deadline = time.monotonic() + 240
    while not all((d / "metrics.jsonl").exists() for d in live):  # the pack is training
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    wait_for_step(live[-1] / "metrics.jsonl", k, proc)
    signum = getattr(signal, signame)
    proc.send_signal(signum)
    while signum != signal.SIGINT and proc.poll() is None:  # and again, through the checkpoint
        time.sleep(0.005)
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, f"k={k}: {err[-2000:]}"
    assert f"received {signame}" in out + err and "to resume" in err
    assert "Traceback" not in err

    stopped = set()
    for run_dir in live:
        assert not (run_dir / "result.json").exists(), run_dir
        state = torch.load(run_dir / "last/trainer_state.pt", weights_only=True)["state"]
        logged = max(r["step"] for r in read_jsonl(run_dir / "metrics.jsonl"))
        assert k <= state["step"] == logged < STEPS, (run_dir.name, k, state["step"], logged)
        stopped.add(state["step"])
        assert f"{run_dir}: interrupted" in out
        leftovers = [p for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".old"))]
        assert not leftovers, leftovers
    assert len(stopped) == 1, f"the members checkpointed different steps: {stopped}"
    assert f"{sweep / DONE}: finished (already finished: skipped)" in out
    assert files_of(sweep / DONE) == done
    counts = "4 jobs: 0 finished, 0 failed, 3 interrupted, 1 skipped"
    if signum == signal.SIGINT:  # one line for the whole sweep (repro.sweep)
        resume = "relaunch the same command to resume"
        assert f"sweep {sweep}: stopped by Ctrl-C: {counts}; {resume}" in err.splitlines()
    else:
        assert f"sweep {sweep}: {counts}" in err

    proc = start(args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"sweep {sweep}: 4 jobs: 3 finished, 0 failed, 0 interrupted, 1 skipped" in out
    assert files_of(sweep / DONE) == done  # skipped again, not retrained
    for run_dir in live:
        keys = [(r["kind"], r["step"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
        assert len(keys) == len(set(keys)), "a metrics line written twice"
        assert_same_as_solo(run_dir, packed_reference / run_dir.name)


def test_a_pack_out_of_memory_redoes_the_step_with_more_micro_batches(
    tmp_path, tiny_t5_dir, monkeypatch, caplog
):
    """grad_accum=auto in a pack: a pass over more than 4 rows runs out of memory (simulated);
    the step is done again with each member in more micro-batches, and the members end as a
    pack run with those counts from the start (nothing of the failed tries kept)."""

    def configs(root, *extra):
        few = ("trainer.batch_size=8", "task.max_eval_examples=4")
        return member_configs(tiny_t5_dir, root, MEMBERS[:2], 1, *few, *extra)

    auto = configs(tmp_path / "auto")
    assert [c.trainer.grad_accum for c in auto] == [1, 1]  # a tiny model fits at once
    assert all(c.trainer.grad_accum_auto for c in auto)
    rows = []
    forward = PackedT5.forward

    def limited(self, input_ids, *args, **kwargs):
        rows.append(len(input_ids))
        if len(input_ids) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, input_ids, *args, **kwargs)

    with monkeypatch.context() as patch, caplog.at_level("WARNING", logger="repro.pack"):
        patch.setattr(PackedT5, "forward", limited)
        retried = run_pack([PackJob(c, tmp_path / "auto" / c.name) for c in auto])
    # 2 members × 8 rows in a pass, then 2 × 4, then 2 × 2: 4 passes
    assert rows == [16, 8] + [4] * 4
    assert len(caplog.records) == 2 and "retrying with grad_accum" in caplog.records[0].message
    fixed = configs(tmp_path / "fixed", "trainer.grad_accum=4")
    run_pack([PackJob(c, tmp_path / "fixed" / c.name) for c in fixed])
    for job, ref in zip(retried, fixed, strict=True):
        assert job.summary["status"] == "finished"
        states = [
            torch.load(d / "last" / "trainer_state.pt")
            for d in (job.run_dir, tmp_path / "fixed" / ref.name)
        ]
        assert states[0]["state"]["step"] == 1
        assert states[0]["optimizer"]["state"][0]["step"] == 1  # one update, not one per try
        torch.testing.assert_close(states[0]["optimizer"]["state"], states[1]["optimizer"]["state"])
        prompts = [
            load_file(d / "last" / "prompt.safetensors")
            for d in (job.run_dir, tmp_path / "fixed" / ref.name)
        ]
        torch.testing.assert_close(prompts[0], prompts[1], rtol=0, atol=0)


def tree(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every file (its bytes and mtime) and directory under ``root``."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("launcher", ["packed", "basic"])
def test_a_dry_run_of_a_sweep_writes_nothing_under_paths_root(tmp_path, tiny_t5_dir, launcher):
    """The README's packed dry run wrote into the main job's multirun/ and replaced its
    multirun.yaml: a dry run (packed or basic launcher) leaves no new or changed file or
    directory under paths.root, the main job's sweep directory included."""
    main = tmp_path / "multirun" / "smoke"  # a main job's sweep, launched before
    (main / "toy_keyword-tiny-lm_adapt100k-p1-class_label-s0").mkdir(parents=True)
    (main / "toy_keyword-tiny-lm_adapt100k-p1-class_label-s0/result.json").write_text("{}")
    (main / "multirun.yaml").write_text("the main job's\n")
    before = tree(tmp_path)
    args = ("dry_run=true", "prompt_len=1,5", "seed=0,1")
    if launcher == "packed":
        proc = packed_cli(tmp_path, tiny_t5_dir, *args)
    else:  # the same command, jobs one by one in this process
        from test_run import run_cli

        root = (f"paths.root={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
        proc = run_cli(
            "-m", "experiment=smoke", f"model.path={tiny_t5_dir}", *root, *args, cwd=ROOT
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sweep {main}: 4 jobs: 0 finished, 0 failed, 0 interrupted, 0 skipped, 4 dry run" in (
        proc.stdout
    )
    assert tree(tmp_path) == before
