"""Do two results frames hold the same scores? ``python -m repro.collect.compare OLD NEW``.

A re-run of a sweep (``sweeps/toy/run_all.sh`` writes beside the shipped ``results/toy/``)
is checked against the frame it re-makes: runs are matched on their axes (a run's identity,
:data:`repro.collect.frame.AXES` with ``eval_task``) and their scores compared exactly, as the
suite promises bit-for-bit repeats on the same kernels (:mod:`repro.numerics`). Prints::

    262 of 264 runs repeat their score exactly (2 differ, 0 only in OLD, 0 only in NEW)

then one line per run that differs; exit 0 when every run of either frame repeats, else 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.collect.frame import AXES, load_frame

KEYS = (*AXES, "eval_task")


@dataclass
class Comparison:
    matched: int
    differ: pd.DataFrame  # the matched runs whose scores differ: KEYS, score_old, score_new
    only_old: int
    only_new: int

    @property
    def repeats(self) -> bool:
        return self.differ.empty and not self.only_old and not self.only_new

    def summary(self) -> str:
        same = self.matched - len(self.differ)
        return (
            f"{same} of {self.matched} runs repeat their score exactly ({len(self.differ)} "
            f"differ, {self.only_old} only in OLD, {self.only_new} only in NEW)"
        )


def compare_frames(old: pd.DataFrame, new: pd.DataFrame) -> Comparison:
    """Match ``old`` and ``new`` on their runs' axes and compare the scores exactly (a missing
    score equals a missing score). Raises ValueError for a frame that holds a run twice."""
    keys = [k for k in KEYS if k in old.columns and k in new.columns]
    frames = {}
    for name, frame in (("OLD", old), ("NEW", new)):
        twice = frame[frame.duplicated(keys, keep=False)]
        if not twice.empty:
            raise ValueError(
                f"{name} holds {len(twice)} rows for {twice[keys].drop_duplicates().shape[0]} "
                f"runs (first: {dict(twice.iloc[0][keys])}); a frame must list each run once"
            )
        frames[name] = frame[[*keys, "score"]].astype({k: str for k in keys})
    both = frames["OLD"].merge(
        frames["NEW"], on=keys, how="outer", suffixes=("_old", "_new"), indicator=True
    )
    matched = both[both["_merge"] == "both"]
    same = (matched["score_old"] == matched["score_new"]) | (
        matched["score_old"].isna() & matched["score_new"].isna()
    )
    return Comparison(
        matched=len(matched),
        differ=matched[~same].drop(columns="_merge").reset_index(drop=True),
        only_old=int((both["_merge"] == "left_only").sum()),
        only_new=int((both["_merge"] == "right_only").sum()),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.collect.compare",
        description="Say how many runs of two results frames (.csv or .parquet) have the same "
        "score: runs matched on their axes, scores compared exactly. Exit 0 if all repeat.",
    )
    parser.add_argument("old", type=Path, help="the frame re-made (e.g. results/toy/runs.csv)")
    parser.add_argument("new", type=Path, help="the re-run's frame")
    args = parser.parse_args(argv)
    try:
        result = compare_frames(load_frame(args.old), load_frame(args.new))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    if not result.differ.empty:
        print(result.differ.to_string(index=False))
    return 0 if result.repeats else 1


if __name__ == "__main__":
    sys.exit(main())
