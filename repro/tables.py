"""Tables 1 and 2 (zero-shot transfer) from a results frame, our numbers beside the paper's.

    python -m repro.tables results/<frame>.csv [-o results/<name>.md]

The frame is ``repro.collect``'s, holding transfer rows (``eval_task != task``, written by
``repro.transfer``) and the source runs' own rows. Every eval set is one line: a target task, or
for MRQA each of its out-of-domain sets (the ``metric/f1/<set>`` columns, Table 1); the in-domain
score of each source task (e.g. SQuAD) is listed too. Values are mean ± sample std over the
runs (seeds) of one (method, train task, eval set); the methods of one eval set (prompt tuning,
model tuning: the paper's two columns) are adjacent rows. The paper's values come from
``results/paper/transfer.csv`` with their source; a value marked † was not verified against the
paper (see that file's ``source`` column). Where the paper reports a task pair, a paper row that
matches no measured row (a method not trained, a set not scored, a name spelt otherwise) and a
measured row the paper has no value for are each named in a
:class:`TablesWarning`, never left as a silent "—".
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from repro.cli import first_line
from repro.collect.frame import load_frame
from repro.files import refuse_existing, write_text_atomic

PAPER_TRANSFER = Path(__file__).resolve().parents[1] / "results" / "paper" / "transfer.csv"
KEYS = ["method", "train_task", "eval_task", "eval_set", "metric"]
PAIR = ["train_task", "eval_task"]


class TablesWarning(UserWarning):
    """A paper row and a measured row that do not meet (repro.tables)."""


def transfer_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, eval set, metric): the transfer rows and their sources' own rows."""
    if "eval_task" not in frame.columns:
        raise ValueError("the frame has no eval_task column: collect it again with repro.collect")
    done = frame[frame["status"] == "finished"].copy()
    done["eval_task"] = done["eval_task"].fillna(done["task"])
    transfer = done["eval_task"] != done["task"]
    sources = set(done.loc[transfer, "task"])
    rows = done[transfer | done["task"].isin(sources)]
    method = rows["method"] if "method" in rows.columns else pd.Series("prompt", rows.index)
    metric_cols = [c for c in rows.columns if c.startswith("metric/")]
    out = []
    for (_, row), how in zip(rows.iterrows(), method.fillna("prompt"), strict=True):
        per_set = [c for c in metric_cols if c.count("/") == 2 and pd.notna(row[c])]
        base = {"method": how, "train_task": row["task"], "eval_task": row["eval_task"]}
        base["seed"], base["run_dir"] = row.get("seed"), row.get("run_dir")
        if per_set:  # MRQA: one eval set per sub-dataset
            for col in per_set:
                _, metric, subset = col.split("/")
                out.append({**base, "eval_set": subset, "metric": metric, "value": row[col]})
        else:
            for col in metric_cols:
                if col.count("/") == 1 and pd.notna(row[col]):
                    metric = col.split("/", 1)[1]
                    out.append(
                        {**base, "eval_set": row["eval_task"], "metric": metric, "value": row[col]}
                    )
    return pd.DataFrame(out, columns=[*KEYS, "value", "seed", "run_dir"])


def transfer_table(frame: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean ± std per (method, train task, eval task, eval set, metric), the paper's beside;
    what does not meet is warned about (:func:`unmatched`)."""
    long = transfer_long(frame)
    grouped = long.groupby(KEYS, sort=False)["value"]
    ours = grouped.agg(mean="mean", std="std", n="count").reset_index()
    if paper is None:
        paper = pd.read_csv(PAPER_TRANSFER)
    paper = paper.rename(columns={"value": "paper", "std": "paper_std"})
    missing, unreported = unmatched(ours, paper)
    for what, rows in (
        ("paper row(s) that match no measured row", missing),
        ("measured row(s) that match no paper row", unreported),
    ):
        if rows:
            warnings.warn(
                f"{len(rows)} {what} (is a method untrained, a set unscored or a name spelt "
                f"otherwise?): {'; '.join(rows)}",
                TablesWarning,
                stacklevel=2,
            )
    cols = [*KEYS, "paper", "paper_std", "verified", "source", "table"]
    table = ours.merge(paper[cols], on=KEYS, how="left")
    return by_eval_set(table)


def _describe(rows: pd.DataFrame) -> list[str]:
    return [
        f"{r.train_task} → {r.eval_task} {r.eval_set} {r.metric} ({r.method})"
        for r in rows.itertuples(index=False)
    ]


def unmatched(ours: pd.DataFrame, paper: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The paper rows no measured row matches, and the measured rows no paper row matches,
    among the task pairs (train task → eval task) both hold: a frame of Table 2's runs says
    nothing about Table 1's rows, a toy pair nothing at all. A measured metric the paper does
    not report for its pair (MRQA's exact match) is no gap either."""
    pairs = ours[PAIR].drop_duplicates().merge(paper[PAIR].drop_duplicates())
    if pairs.empty:
        return [], []
    keys_ours, keys_paper = (df[KEYS].drop_duplicates().merge(pairs) for df in (ours, paper))
    both = keys_ours.merge(keys_paper, how="outer", indicator=True)
    missing = both[both["_merge"] == "right_only"]
    reported = paper[[*PAIR, "metric"]].drop_duplicates()
    unreported = both[both["_merge"] == "left_only"].merge(reported)
    return _describe(missing), _describe(unreported)


def by_eval_set(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order their (train task, eval task, eval set, metric) first appear, the
    methods of each adjacent (alphabetical: model before prompt, as the paper's columns)."""
    place = table[KEYS[1:]].apply(tuple, axis=1)
    first = {key: i for i, key in reversed(list(enumerate(place)))}
    order = place.map(first)
    return (
        table.assign(_order=order)
        .sort_values(["_order", "method"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| train → eval | eval set | method | metric | ours (mean ± std, n) | paper |",
        "|---|---|---|---|---|---|",
    ]
    sources = []
    for _, r in table.iterrows():
        std = "" if pd.isna(r["std"]) else f" ± {r['std']:.1f}"
        ours = f"{r['mean']:.1f}{std} (n={int(r['n'])})"
        if pd.isna(r["paper"]):
            paper = "—"
        else:
            mark = "" if str(r["verified"]) == "yes" else " †"
            paper = f"{r['paper']:.1f} ± {r['paper_std']:.1f}{mark}"
            if r["source"] not in sources:
                sources.append(r["source"])
        lines.append(
            f"| {r['train_task']} → {r['eval_task']} | {r['eval_set']} | {r['method']} | "
            f"{r['metric']} | {ours} | {paper} |"
        )
    lines.append("")
    if sources:
        lines.append("Paper values: " + "; ".join(sources) + " († = not verified).")
    else:
        lines.append("No paper value for these task pairs (toy or other tasks).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.tables", description=__doc__.split("\n")[0]
    )
    parser.add_argument("frame", help="a results frame (.csv/.parquet) from repro.collect")
    parser.add_argument("-o", "--output", help="also write the markdown table here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        refuse_existing([args.output] if args.output else [], args.overwrite)
        frame = load_frame(args.frame)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TablesWarning)
            table = transfer_table(frame)
        if table.empty:
            raise ValueError(
                f"{args.frame} holds no transfer rows (eval_task != task); run "
                "python -m repro.transfer on its runs, then collect again"
            )
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    for warning in caught:  # one line each on stderr, as the other commands' warnings
        print(f"warning: {warning.message}", file=sys.stderr)
    text = markdown(table)
    print(text, end="")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
