"""Collect runs into one pandas frame: one row per run, from run directories or from W&B.

CLI: `python -m repro.collect <dirs...> -o results/<name>.csv [--wandb entity/project --group G]
[--wandb-offline <sweep dir> --group G] [--overwrite]`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from repro.collect.frame import write_frame
from repro.collect.rundirs import collect_runs
from repro.collect.wandb_runs import OFFLINE_GLOB, collect_wandb, collect_wandb_offline
from repro.files import refuse_existing


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m repro.collect <dirs...> -o results/<name>.csv [--wandb entity/project]`.

    Refuses (one `error:` line, exit 2, the output file left as it was) an output that exists
    already (unless `--overwrite`), a directory that does not exist, a collection that finds no
    run at all (an empty frame would replace a good CSV) and an output it cannot write. The
    output is written aside and renamed: a failed write never leaves half a file in place of
    the old one.
    """
    parser = argparse.ArgumentParser(
        prog="python -m repro.collect",
        description=__doc__.split("\n")[0],
        epilog="The W&B frame of a sweep logged offline (no account, no network): "
        "python -m repro.run -m experiment=toy prompt_len=1,5,20,100,150 sweep_name=toy_wandb "
        "logger=wandb logger.mode=offline, then python -m repro.collect --wandb-offline "
        "multirun/toy_wandb -o results/toy_prompt_len_wandb.csv",
    )
    parser.add_argument("paths", nargs="*", help="sweep, runs or run directories")
    parser.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also collect this W&B project")
    parser.add_argument(
        "--wandb-offline",
        metavar="DIR",
        help="also collect the offline W&B runs under DIR (a sweep or run dir of a "
        "logger=wandb logger.mode=offline run: <run>/wandb/offline-run-*/), read from their "
        "files as W&B would serve them once synced",
    )
    parser.add_argument("--group", help="W&B group (one per sweep; default: every group)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb and not args.wandb_offline:
        parser.error(
            "give at least one run directory, --wandb entity/project or --wandb-offline DIR"
        )
    output = Path(args.output)
    if output.suffix not in (".csv", ".parquet"):
        parser.error(f"output must end in .csv or .parquet, got {output.name!r}")
    try:
        refuse_existing([output], args.overwrite)
    except FileExistsError as err:
        return _error(str(err))

    frames = []
    if args.paths:
        try:
            frames.append(collect_runs(args.paths))
        except FileNotFoundError as err:
            return _error(f"{err}; give a sweep dir (multirun/<sweep_name>), runs/ or a run dir")
    if args.wandb:
        frames.append(collect_wandb(args.wandb, group=args.group))
    if args.wandb_offline:
        try:
            frames.append(collect_wandb_offline(args.wandb_offline, group=args.group))
        except FileNotFoundError as err:
            return _error(
                f"--wandb-offline: {err}; give the sweep dir of a logger=wandb "
                "logger.mode=offline sweep (multirun/<sweep_name>)"
            )
        except ImportError:
            return _error("--wandb-offline reads W&B's record files with wandb: pip install wandb")
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if df.empty:
        searched = [
            *args.paths,
            *([f"W&B {args.wandb}"] if args.wandb else []),
            *([f"W&B offline runs under {args.wandb_offline}"] if args.wandb_offline else []),
        ]
        from_wandb = args.wandb or args.wandb_offline
        group = f" of group {args.group!r}" if args.group and from_wandb else ""
        holds = ["a run dir holds result.json, metrics.jsonl or config.yaml"] if args.paths else []
        if args.wandb_offline:
            holds.append(f"logger=wandb logger.mode=offline writes <run>/wandb/{OFFLINE_GLOB}/")
        why = f" ({'; '.join(holds)})" if holds else ""
        kept = f"{output} left as it is" if output.exists() else f"{output} not written"
        return _error(f"no run{group} found in {', '.join(map(str, searched))}{why}; {kept}")

    try:
        write_frame(df, output)
    except OSError as err:
        where = f"{err.filename}: " if err.filename and str(err.filename) != str(output) else ""
        return _error(
            f"cannot write {output}: {where}{err.strerror or err}; give -o a writable .csv or "
            ".parquet path"
        )
    counts = df["status"].value_counts(dropna=False)
    print(f"{len(df)} runs -> {output}")
    for status, n in counts.items():
        print(f"  {status}: {n}")
    return 0


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
