"""What prompts mean (paper §7): each prompt token's nearest vocabulary tokens.

    python -m repro.interpret <run dirs or sweep dirs> [-k 5]

For every position of a run's best prompt, the top-k tokens of the frozen embedding table by
cosine similarity; the share of positions whose k neighbours include a class label of the task;
and the same for the run's untrained prompt (``init/``, saved by ``repro.run`` before the first
step; for a run made before that, recomputed from its config: initialisers are deterministic
given the seed) as the baseline. Written into the run directory::

    interpret/neighbours.csv   prompt (best | init), position, rank, token_id, token, cosine, is_label
    interpret/summary.csv      prompt, k, positions, label_positions, label_share, init_source
    interpret/neighbours.md    the summary, then each position's neighbours, best beside init

**Finished runs only.** A run still training (its job holds the run's lock), one stopped
before its end (no ``result.json``: it is written last) or one that failed is refused in one
``error:`` line naming it and its status, before anything is read or written: its ``best/`` may
still change, and its directory is the job's.

**Class label.** A neighbour counts as one when its id is a sub-token id of one of the task's
label words (``task.class_words``: the labels, or ReCoRD/WSC's init words), tokenised as the
class-label initialiser embeds them; pieces that hold no letter or digit (``▁``, ``_``) do not
count.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from repro.cli import USER_ERRORS, cli_error_message, first_line
from repro.collect.frame import write_frame
from repro.files import read_json, refuse_existing, write_text_atomic
from repro.prompts import init_prompt, label_token_ids, load_prompt
from repro.rundir import LOCK, RESULT
from repro.trained import INIT, RunReadError, TrainedRun, find_runs, load_backbone_of, read_run

OUT_DIR = "interpret"
OUT_FILES = ("neighbours.csv", "summary.csv", "neighbours.md")  # in <run_dir>/interpret/


def unfinished(run_dir: str | Path) -> str | None:
    """Why ``run_dir`` does not hold a finished run (its status, one phrase), or None."""
    run_dir = Path(run_dir)
    result = read_json(run_dir / RESULT)
    if result is None:
        if holder := _training(run_dir):
            return f"is still training (status: running; in use by {holder})"
        return (
            f"has no {RESULT} (status: unfinished; stopped before its end, or its job has not "
            "written its result yet)"
        )
    status = result.get("status")
    if status == "finished":
        return None
    error = f": {first_line(result['error'])}" if result.get("error") else ""
    return f"is not a finished run (status: {status}{error})"


def _training(run_dir: Path) -> str | None:
    """Who holds the run's lock (`repro.rundir.locked`: the job training it; a task=superglue
    job holds it one directory up), as the lock file names it, or None. Only probes the lock:
    opens the file read-only, never creates or writes it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: runs take no lock
        return None
    for directory in (run_dir, run_dir.parent):
        try:
            fd = os.open(directory / LOCK, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)  # drops the probe's shared lock at once
    return None


def require_finished(run_dirs: Sequence[str | Path]) -> None:
    """Refuse (RunReadError, one line naming each run and its status) unfinished runs."""
    refused = [f"{d} {why}" for d in run_dirs if (why := unfinished(d))]
    if refused:
        raise RunReadError(
            f"{'; '.join(refused)}: only a finished run is read (its best/ is final); wait for "
            "it to finish, or launch its command again to resume it, then run this again"
        )


def nearest_tokens(prompt: Tensor, table: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """Top-k rows of ``table`` [V, H] by cosine similarity to each prompt row [P, H].

    Returns:
        (ids [P, k], cosine [P, k]), most similar first.
    """
    if not 1 <= k <= table.shape[0]:
        raise ValueError(f"k must be in [1, {table.shape[0]}] (the vocabulary size); got {k}")
    p = torch.nn.functional.normalize(prompt.float(), dim=-1)
    t = torch.nn.functional.normalize(table.float(), dim=-1)
    sims, ids = (p @ t.T).topk(k, dim=-1)
    return ids, sims


def label_ids(tokenizer, words: Sequence[str]) -> set[int]:
    """Sub-token ids of the label words that hold a letter or digit."""
    ids = set()
    for pieces in label_token_ids(tokenizer, words):
        for i in pieces:
            if any(ch.isalnum() for ch in tokenizer.convert_ids_to_tokens(i)):
                ids.add(i)
    return ids


def initial_prompt(run: TrainedRun, table: Tensor, tokenizer) -> tuple[Tensor, str]:
    """The run's untrained prompt: ``init/`` if saved, else recomputed from its config."""
    if (run.run_dir / INIT).is_dir():
        return load_prompt(run.run_dir / INIT)[0], "init/"
    init = run.cfg.init
    if init.name not in ("random_uniform", "sampled_vocab", "class_label"):
        raise RunReadError(
            f"{run.run_dir} has no {INIT}/ and its init={init.name} is not recomputed here; "
            "run it again with this version of repro.run to keep its initial prompt"
        )
    kwargs = {"population": init.population, "low": init.low, "high": init.high}
    if init.name == "class_label":
        kwargs["class_token_ids"] = label_token_ids(tokenizer, run.task.class_words)
    weight = init_prompt(init.name, table, run.cfg.prompt_len, seed=run.cfg.seed, **kwargs)
    return weight, "recomputed from config"


def interpret_run(run: TrainedRun, table: Tensor, tokenizer, k: int = 5):
    """(neighbours frame, summary frame) of the run's best and initial prompts."""
    labels = label_ids(tokenizer, run.task.class_words)
    init, source = initial_prompt(run, table, tokenizer)
    rows, summary = [], []
    for name, prompt in (("best", run.best_prompt()), ("init", init)):
        ids, sims = nearest_tokens(prompt, table, k)
        hits = 0
        for pos in range(prompt.shape[0]):
            pos_ids = ids[pos].tolist()
            hits += any(i in labels for i in pos_ids)
            for rank, (i, s) in enumerate(zip(pos_ids, sims[pos].tolist(), strict=True), 1):
                rows.append(
                    {
                        "prompt": name,
                        "position": pos,
                        "rank": rank,
                        "token_id": i,
                        "token": tokenizer.convert_ids_to_tokens(i),
                        "cosine": s,
                        "is_label": i in labels,
                    }
                )
        summary.append(
            {
                "prompt": name,
                "k": k,
                "positions": prompt.shape[0],
                "label_positions": hits,
                "label_share": hits / prompt.shape[0],
                "init_source": source if name == "init" else "best/",
                "class_words": " ".join(run.task.class_words),
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(summary)


def markdown(run: TrainedRun, neighbours: pd.DataFrame, summary: pd.DataFrame) -> str:
    k = int(summary["k"].iloc[0])
    lines = [
        f"# Prompt neighbours: {run.task.name}, {run.run_dir.name}",
        "",
        f"Top-{k} vocabulary tokens by cosine similarity to each prompt token (frozen "
        f"embedding table of {run.checkpoint}); class labels: {', '.join(run.task.class_words)}.",
        "",
        "| prompt | positions | with a class label in its top-k | share |",
        "|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['prompt']} ({r['init_source']}) | {r['positions']} | {r['label_positions']} | "
            f"{100 * r['label_share']:.1f} % |"
        )
    lines += ["", "| position | best prompt | initial prompt |", "|---|---|---|"]

    def cell(df: pd.DataFrame) -> str:
        return ", ".join(
            f"**{t}**" if lab else str(t)
            for t, lab in zip(df["token"], df["is_label"], strict=True)
        ).replace("|", "\\|")

    for pos, part in neighbours.groupby("position", sort=True):
        best, init = part[part["prompt"] == "best"], part[part["prompt"] == "init"]
        lines.append(f"| {pos} | {cell(best)} | {cell(init)} |")
    lines += ["", "Bold: a class label's sub-token."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.interpret", description=__doc__.split("\n")[0]
    )
    parser.add_argument("paths", nargs="+", help="run directories or sweep directories")
    parser.add_argument("-k", type=int, default=5, help="neighbours per prompt token (paper: 5)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the interpret/ files written before"
    )
    args = parser.parse_args(argv)
    try:
        if args.k < 1:
            raise ValueError(f"-k must be >= 1; got {args.k}")
        run_dirs = find_runs(args.paths)
        require_finished(run_dirs)  # before anything is read or written
        runs = [read_run(d) for d in run_dirs]
        refuse_existing(
            [r.run_dir / OUT_DIR / name for r in runs for name in OUT_FILES], args.overwrite
        )
        backbones = {}
        for run in runs:
            run._require_prompt("reading its prompt's neighbours")
            if run.checkpoint not in backbones:
                backbones[run.checkpoint] = load_backbone_of(run)
            backbone = backbones[run.checkpoint]
            table = backbone.model.get_input_embeddings().weight.detach().float().cpu()
            neighbours, summary = interpret_run(run, table, backbone.tokenizer, args.k)
            out = run.run_dir / OUT_DIR
            out.mkdir(exist_ok=True)
            write_frame(neighbours, out / OUT_FILES[0])
            write_frame(summary, out / OUT_FILES[1])
            write_text_atomic(out / OUT_FILES[2], markdown(run, neighbours, summary))
            shares = ", ".join(
                f"{r['prompt']} {100 * r['label_share']:.1f} %" for _, r in summary.iterrows()
            )
            print(f"{run.run_dir}: positions with a class label in the top-{args.k}: {shares}")
            print(f"  -> {out}/neighbours.csv, summary.csv, neighbours.md")
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
