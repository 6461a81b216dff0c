"""``python -m repro.cost [-m] [--jobs] [--packed] [--calibration F] [--config-dir D --config-name
N] overrides...``: the cost of what ``python -m repro.run`` would launch, printed without loading
any weights.

``--calibration F`` is ``cost.calibration=F`` (:mod:`repro.calibration`: priced from the steps
``benchmarks/gpu_check.py`` measured) and, unless the command sets ``cost.gpu``, ``cost.gpu`` =
the GPU it was measured on, so that memory limits are that GPU's too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from repro.calibration import load_calibration
from repro.cli import cli_error_message
from repro.cost.packed import describe_packed
from repro.cost.plan import describe_deduplication, sweep_plan
from repro.cost.report import describe, describe_adaptation, describe_groups, describe_total
from repro.estimate import adaptation_costs, estimate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.cost",
        description="Cost of `python -m repro.run [-m] overrides...` (parameters, memory, "
        "FLOPs, GPU-hours), a sweep in groups of jobs that cost the same, with subtotals per "
        "model size, the LM adaptation the jobs need, and one total: the jobs' GPU-hours plus "
        "the LM adaptation's. Warns about jobs that do not fit cost.gpu_memory_gb. Loads no "
        "weights.",
    )
    parser.add_argument("-m", "--multirun", action="store_true", help="expand a sweep")
    parser.add_argument("--jobs", action="store_true", help="one line per job, not per group")
    parser.add_argument(
        "--packed",
        action="store_true",
        help="also price the sweep packed (hydra/launcher=packed) against unpacked",
    )
    parser.add_argument(
        "--calibration",
        metavar="GPU_CHECK_JSON",
        default=None,
        help="price from the steps benchmarks/gpu_check.py measured (cost.calibration), on the "
        "GPU it measured (cost.gpu, unless given)",
    )
    parser.add_argument("--config-dir", "-cd", default=None)
    parser.add_argument("--config-name", "-cn", default="config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        overrides = list(args.overrides)
        if args.calibration is not None:
            overrides += calibration_overrides(args.calibration, overrides)
        plan = sweep_plan(
            overrides,
            multirun=args.multirun,
            config_dir=args.config_dir,
            config_name=args.config_name,
        )
        expanded = plan.jobs
        configs = [cfg for _, cfg in expanded]
        jobs = [estimate(cfg) for cfg in configs]
        adaptations = adaptation_costs(configs)
    except Exception as err:
        message = cli_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    if args.jobs or len(jobs) == 1:
        for job in jobs:
            print(describe(job))
    else:
        print("\n".join(describe_groups(jobs, [o for o, _ in expanded])))
    for adaptation in adaptations:
        print(describe_adaptation(adaptation))
    print(describe_total(jobs, adaptations))
    if plan.panel_line is not None:
        print("\n".join(describe_deduplication(plan)))
    if args.packed:
        print("\n".join(describe_packed(configs)))
    return 0


def calibration_overrides(path: str, overrides: Sequence[str]) -> list[str]:
    """``cost.calibration=<path>``, and ``cost.gpu=<its GPU>`` unless ``overrides`` set
    ``cost.gpu`` or the GPU is not in ``repro.gpus``' table (then memory stays cost.gpu's)."""
    added = [f"cost.calibration={quote(path)}"]
    gpu = load_calibration(path).gpu
    if gpu is not None and not any(o.lstrip("+~").startswith("cost.gpu=") for o in overrides):
        added.append(f"cost.gpu={gpu}")
    return added


def quote(value: str) -> str:
    """A Hydra override value that keeps a path as written (spaces, ``=``, commas)."""
    return "'" + value.replace("'", "\\'") + "'"
