"""Tables 1 and 2 (zero-shot transfer) from a results frame, our numbers beside the paper's.

    python -m repro.tables results/<frame>.csv [-o results/<name>.md]

The frame is ``repro.collect``'s, holding transfer rows (``eval_task != task``, written by
``repro.transfer``) and the source runs' own rows. Every eval set is one line: a target task, or
for MRQA each of its out-of-domain sets (the ``metric/f1/<set>`` columns, Table 1); the in-domain
score of each source task (e.g. SQuAD) is listed too. Values are mean ± sample std over the
runs (seeds) of one (method, train task, eval set). The paper's values come from
``results/paper/transfer.csv`` with their source; a value marked † is not in PAPER.md and was
not verified against the paper (see that file's ``source`` column).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from repro.cli import first_line
from repro.collect.frame import load_frame
from repro.files import refuse_existing, write_text_atomic

PAPER_TRANSFER = Path(__file__).resolve().parents[1] / "results" / "paper" / "transfer.csv"
KEYS = ["method", "train_task", "eval_task", "eval_set", "metric"]


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
    """Mean ± std per (method, train task, eval task, eval set, metric), the paper's beside."""
    long = transfer_long(frame)
    grouped = long.groupby(KEYS, sort=False)["value"]
    ours = grouped.agg(mean="mean", std="std", n="count").reset_index()
    if paper is None:
        paper = pd.read_csv(PAPER_TRANSFER)
    paper = paper.rename(columns={"value": "paper", "std": "paper_std"})
    cols = [*KEYS, "paper", "paper_std", "verified", "source", "table"]
    return ours.merge(paper[cols], on=KEYS, how="left")


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
        table = transfer_table(frame)
        if table.empty:
            raise ValueError(
                f"{args.frame} holds no transfer rows (eval_task != task); run "
                "python -m repro.transfer on its runs, then collect again"
            )
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    text = markdown(table)
    print(text, end="")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
