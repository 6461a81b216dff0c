"""Packed vs unpacked with dropout on: the toy Figure 3(a) sweep, 3 seeds, paired (issue 16).

With dropout on, a packed member's dropout masks are not those of its solo run (docs/packing.md,
"Dropout on"), so the two are different samples of the same training procedure. This script
runs the same toy sweep twice — unpacked (Hydra's basic launcher: the jobs one after the other)
and packed (`hydra/launcher=packed`) — into two multirun directories, then pairs each packed
member with its solo run (same prompt length, same seed: same data order, same initial prompt)
and asks whether packing shifts the results more than seed-to-seed noise would:

    python benchmarks/compare_pack_dropout.py                          # run both sweeps, then compare
    python benchmarks/compare_pack_dropout.py --sequential             # one sweep after the other
    python benchmarks/compare_pack_dropout.py --read                   # compare runs already there
    python benchmarks/compare_pack_dropout.py --read --rescore         # + best/ re-scored alone
    python benchmarks/compare_pack_dropout.py --task toy_review --model toy_xl --root /tmp/pd

Both sweeps run single-threaded (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1: torch's intra-op pool of
1), side by side by default (started at the same moment, so the machine's load falls on both),
each timed wall-clock; the 1-minute load average is sampled every 30 s. Times and load go to
`<root>/timing.json`, each sweep's output to `<root>/<side>.log`.

The comparison, per (prompt length, seed) pair, packed − solo:

- the final score, its best step and the dev metric at the last evaluation: on a 200-example
  dev set these move in steps of 0.5 and saturate (0 or 100, or the majority class), and a
  saturated pair carries no information about a difference;
- the mean training loss of the last logging window (`metrics.jsonl`, kind `train`, the last
  `log_every` steps): a continuous quantity that does not saturate, where a shift would show.

For each quantity: an exact paired sign-flip permutation test of the mean difference (all
2^n sign patterns of the n pairs; two-sided), the mean and std of the differences, and mean ±
std over seeds of each side per prompt length. The test can show a consistent shift of the
mean; it cannot show that the two are equal, only that no shift larger than the pairs' noise
appeared (with n = 15 the smallest possible p is 2 / 2^15). `--rescore` re-scores every run's
`best/` alone (the solo evaluation path, `repro.transfer.transfer_eval` on its own task): for a
packed member it tells whether the packed decode gave the score a solo decode gives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `repro` of this checkout, also when it is not installed
SIDES = ("solo", "packed")


# ----------------------------------------------------------------------------- statistics


EXACT_MAX = 20  # non-zero pairs up to which every sign pattern is enumerated
DRAWS = 2**20  # random sign patterns above it


def sign_flip_test(differences, seed: int = 0) -> tuple[float, float]:
    """Paired sign-flip permutation test of mean(differences) == 0, two-sided.

    Under the null (packing changes nothing), each pair's difference is as likely to have either
    sign, so every one of the 2^n sign patterns gives an equally likely mean. The p-value is the
    fraction of patterns whose |mean| is at least the observed |mean| (the observed one counts).
    Pairs with difference 0 change no pattern's mean and are left out of the enumeration: up to
    EXACT_MAX non-zero pairs every pattern is enumerated (exact); above it DRAWS random patterns
    from ``seed`` are drawn, p = (as extreme + 1) / (DRAWS + 1) (a Monte Carlo estimate, within
    ~0.001 of the exact p at p = 0.05). Returns (observed mean over all pairs, p).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"need a non-empty 1-d list of differences, got shape {d.shape}")
    observed = float(d.mean())
    x = d[d != 0]
    n = len(x)
    if n == 0:
        return observed, 1.0
    # a tolerance so that patterns equal to the observed one up to rounding count as "as extreme"
    threshold = abs(x.sum()) - 1e-12 * max(1.0, abs(x.sum()))
    if n <= EXACT_MAX:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # every ±1 pattern
        return observed, float(np.mean(np.abs(signs @ x) >= threshold))
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(DRAWS // 2**16):
        signs = rng.choice([-1.0, 1.0], size=(2**16, n))
        extreme += int(np.sum(np.abs(signs @ x) >= threshold))
    return observed, (extreme + 1) / (DRAWS + 1)


# ----------------------------------------------------------------------------- running


def sweep_command(side: str, args) -> list[str]:
    cmd = [sys.executable, "-m", "repro.run", "-m"]
    if side == "packed":
        cmd.append("hydra/launcher=packed")
    return [
        *cmd,
        "experiment=toy",
        f"model={args.model}",
        f"task={args.task}",
        f"prompt_len={args.prompt_lens}",
        f"seed={args.seeds}",
        f"paths.root={args.root}",
        f"sweep_name={side}",
        *args.override,
    ]


def run_sweeps(args) -> dict:
    """Run the unpacked and the packed sweep (side by side or in turn); time each, sample load."""
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    loads: list[tuple[float, float]] = []
    done = threading.Event()
    start = time.time()

    def sample_load() -> None:
        while not done.is_set():
            loads.append((round(time.time() - start, 1), os.getloadavg()[0]))
            done.wait(30)

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    timing: dict = {"mode": "sequential" if args.sequential else "side by side", "sides": {}}
    procs = {}
    order = ("solo", "packed")
    for side in order:
        cmd = sweep_command(side, args)
        print(f"[{side}] {' '.join(cmd[1:])}", flush=True)
        log = open(root / f"{side}.log", "w")  # noqa: SIM115 (closed when the process ends)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs[side] = (proc, t0, log, cmd)
        if args.sequential:
            finish(side, procs[side], timing)
    for side in order:
        if "wall_s" not in timing["sides"].get(side, {}):
            finish(side, procs[side], timing)
    done.set()
    sampler.join()
    loads.append((round(time.time() - start, 1), os.getloadavg()[0]))
    timing["load_1min"] = loads
    timing["omp_num_threads"] = 1
    (root / "timing.json").write_text(json.dumps(timing, indent=1))
    return timing


def finish(side, entry, timing) -> None:
    proc, t0, log, cmd = entry
    rc = proc.wait()
    wall = time.perf_counter() - t0
    log.close()
    timing["sides"][side] = {"wall_s": wall, "returncode": rc, "command": " ".join(cmd[1:])}
    print(f"[{side}] exit {rc} after {wall:.0f} s", flush=True)


# ----------------------------------------------------------------------------- reading


def fail(message: str):
    """One line on stderr, exit 2 (the project's way of refusing input)."""
    print(f"compare_pack_dropout: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_side(sweep_dir: Path) -> dict[tuple[int, int], dict]:
    """(prompt_len, seed) → final score, best step, last dev metric, last train-window loss."""
    from repro.collect.rundirs import collect_runs
    from repro.tracking import MetricsLog

    if not sweep_dir.is_dir():
        fail(f"no sweep directory {sweep_dir} (run without --read first, or pass its --root)")
    frame = collect_runs([sweep_dir])
    runs = {}
    for row in frame.itertuples():
        if row.status != "finished":
            fail(f"{row.run_dir}: status {row.status}, not finished; rerun the sweep")
        records = MetricsLog(Path(row.run_dir) / "metrics.jsonl").read()
        evals = [r for r in records if r.get("kind") == "eval"]
        trains = [r for r in records if r.get("kind") == "train"]
        result = json.loads((Path(row.run_dir) / "result.json").read_text())
        runs[(int(row.prompt_len), int(row.seed))] = {
            "score": float(row.score),
            "best_step": int(row.best_step),
            "last_dev": float(evals[-1]["score"]),
            "final_loss": float(trains[-1]["loss"]),
            "train_s": float(result.get("train_s", float("nan"))),
            "pack_size": result.get("pack_size"),
        }
    return runs


def rescore_alone(sweep_dir: Path) -> list[tuple[str, float, float]]:
    """Each run's best/ re-scored on its dev set by the solo evaluation path (no pack):
    (run name, recorded score, re-scored). Equal for a packed run = its packed decode was exact,
    so any packed − solo difference comes from training, not from packed evaluation."""
    import repro.toyworld.tasks  # noqa: F401 (registers toy_review, toy_fact)
    from repro.trained import read_run
    from repro.transfer import transfer_eval

    rows, backbone = [], None
    for run_dir in sorted(d for d in sweep_dir.iterdir() if (d / "result.json").exists()):
        run = read_run(run_dir)
        result, backbone = transfer_eval(run, run.task, backbone=backbone)
        rows.append((run_dir.name, float(run.score), float(result["score"])))
    return rows


# ----------------------------------------------------------------------------- report

QUANTITIES = (
    ("score", "final score (best dev)"),
    ("last_dev", "dev metric at the last eval"),
    ("final_loss", "final train loss (last window)"),
)


def report(solo: dict, packed: dict, timing: dict | None) -> dict:
    keys = sorted(solo)
    if sorted(packed) != keys:
        fail(f"the two sweeps hold different jobs: {sorted(solo)} vs {sorted(packed)}")
    print(f"\n{len(keys)} pairs (prompt_len, seed): packed vs solo (unpacked)\n")
    print(
        "| p | seed | score solo / packed | best step solo / packed "
        "| last dev solo / packed | final train loss solo / packed | Δ loss |"
    )
    print("|---|---|---|---|---|---|---|")
    for p, s in keys:
        a, b = solo[(p, s)], packed[(p, s)]
        print(
            f"| {p} | {s} | {a['score']:.1f} / {b['score']:.1f} "
            f"| {a['best_step']} / {b['best_step']} "
            f"| {a['last_dev']:.1f} / {b['last_dev']:.1f} "
            f"| {a['final_loss']:.4f} / {b['final_loss']:.4f} "
            f"| {b['final_loss'] - a['final_loss']:+.4f} |"
        )

    print("\nper prompt length, mean ± std over seeds (solo | packed)\n")
    print("| p | score solo | score packed | final loss solo | final loss packed |")
    print("|---|---|---|---|---|")
    for p in sorted({p for p, _ in keys}):
        rows = [k for k in keys if k[0] == p]
        cells = []
        for q in ("score", "final_loss"):
            for side in (solo, packed):
                v = np.array([side[k][q] for k in rows])
                digits = 1 if q == "score" else 4
                cells.append(
                    f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}"
                )
        print(f"| {p} | " + " | ".join(cells) + " |")

    print(
        "\npaired packed − solo, sign-flip permutation test (two-sided; every sign pattern of the "
        f"non-zero pairs up to {EXACT_MAX}, {DRAWS} random ones above)\n"
    )
    print("| quantity | n | pairs equal | mean Δ | std Δ | seed std (solo, pooled) | p |")
    print("|---|---|---|---|---|---|---|")
    tests = {}
    for q, label in QUANTITIES:
        d = np.array([packed[k][q] - solo[k][q] for k in keys])
        mean, p = sign_flip_test(d)
        spread = pooled_seed_std(solo, q)
        tests[q] = {"mean": mean, "p": p, "std": float(d.std(ddof=1)), "seed_std": spread}
        print(
            f"| {label} | {len(d)} | {int(np.sum(d == 0))} | {mean:+.4f} | {d.std(ddof=1):.4f} "
            f"| {spread:.4f} | {p:.4f} |"
        )
    print(
        "\nWhat this can show: a consistent shift of packed against solo (p small). What it cannot:"
        f"\nthat they are equal — with {len(keys)} pairs a non-significant p only says that no shift"
        "\nlarger than the pairs' noise appeared. Pairs with equal, saturated scores (0, 100 or the"
        "\nmajority class) carry no information; the continuous train loss is where a shift would show."
    )
    if timing:
        sides = timing["sides"]
        loads = [v for _, v in timing.get("load_1min", [])]
        print(f"\nwall time ({timing['mode']}, OMP_NUM_THREADS=1):")
        for side in SIDES:
            print(f"  {side:6s} {sides[side]['wall_s']:.0f} s (exit {sides[side]['returncode']})")
        ratio = sides["packed"]["wall_s"] / sides["solo"]["wall_s"]
        print(f"  packed / unpacked wall time: {ratio:.2f}")
        if loads:
            print(f"  1-min load average: {min(loads):.1f}–{max(loads):.1f} ({len(loads)} samples)")
    return tests


def pooled_seed_std(side: dict, q: str) -> float:
    """Seed-to-seed std of quantity q, pooled over prompt lengths (the noise a shift must beat)."""
    groups: dict[int, list[float]] = {}
    for (p, _), run in side.items():
        groups.setdefault(p, []).append(run[q])
    num = sum((len(v) - 1) * np.var(v, ddof=1) for v in groups.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in groups.values() if len(v) > 1)
    return float(np.sqrt(num / dof)) if dof else float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "multirun" / "pack_dropout"),
                        help="paths.root of both sweeps: <root>/multirun/{solo,packed}/")  # fmt: skip
    parser.add_argument("--model", default="toy_xl")
    parser.add_argument("--task", default="toy_fact")
    parser.add_argument("--prompt-lens", default="1,5,20,100,150")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sequential", action="store_true",
                        help="run the unpacked sweep, then the packed one (default: side by side)")  # fmt: skip
    parser.add_argument("--read", action="store_true",
                        help="do not run: compare the runs already under --root")  # fmt: skip
    parser.add_argument("--rescore", action="store_true",
                        help="also re-score every run's best/ alone (the solo evaluation path)")  # fmt: skip
    parser.add_argument("--override", action="append", default=[],
                        help="one more Hydra override for both sweeps (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    args.root = str(Path(args.root).resolve())
    timing_path = Path(args.root) / "timing.json"
    if args.read:
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else None
    else:
        timing = run_sweeps(args)
    sides = {side: read_side(Path(args.root) / "multirun" / side) for side in SIDES}
    tests = report(sides["solo"], sides["packed"], timing)
    if args.rescore:
        import torch

        torch.set_num_threads(1)
        for side in SIDES:
            rows = rescore_alone(Path(args.root) / "multirun" / side)
            same = sum(recorded == again for _, recorded, again in rows)
            print(f"\n{side}: best/ re-scored alone = recorded score in {same} of {len(rows)} runs")
            for name, recorded, again in rows:
                if recorded != again:
                    print(f"  {name}: recorded {recorded}, re-scored alone {again}")
    return tests


if __name__ == "__main__":
    main()
