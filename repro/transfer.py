"""Zero-shot domain transfer (paper §6, Tables 1 and 2): a trained run scored, without further
training, on another task's evaluation data.

    python -m repro.transfer <run dirs or sweep dirs> --to mrpc --to qqp     # Table 2
    python -m repro.transfer multirun/table1_squad_mrqa --to mrqa            # Table 1

Each (run, target) writes ``<run_dir>/transfer/<target>/result.json``: the run's axes, ``task``
(what it was trained on), ``eval_task`` (what it was scored on), the target's metrics and
score. ``repro.collect`` reads them as rows of the results frame (column ``eval_task``; a run's
own evaluation has ``eval_task == task``); ``python -m repro.tables`` prints Tables 1 and 2.

**Label words.** A classification run answers in its own task's words; they are mapped to the
target's by class id (QQP ``not_duplicate/duplicate`` → MRPC ``not_equivalent/equivalent``,
:func:`repro.tasks.map_labels`). Two tasks can be paired when both have the same number of
classes, or both are generative (SQuAD → MRQA: answers are text, scored by F1). A run trained on
the target task itself is skipped: its own ``result.json`` is its in-domain score.

The run is read through :func:`repro.trained.load_scorer`, so any method that registers a
scorer there (prompt tuning today; model tuning plugs in) is transferred the same way.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repro.cli import USER_ERRORS, cli_error_message
from repro.collect.frame import AXES
from repro.evaluate import predict, strip_sentinel
from repro.files import refuse_existing, write_json_atomic
from repro.tasks import Task, get_task
from repro.trained import (
    RunReadError,
    TrainedRun,
    candidates_of,
    encoded_inputs,
    eval_examples,
    find_runs,
    generation_limit,
    load_scorer,
    read_run,
)
from repro.trainer import resolve_device

TRANSFER_DIR = "transfer"


class TransferError(RunReadError):
    """A source and target task whose answers cannot be mapped onto each other: one line."""


def label_map(source: Task, target: Task) -> dict[str, str]:
    """Source label word → target label word by class id; {} for two generative tasks."""
    if not source.labels and not target.labels:
        return {}
    if len(source.labels) != len(target.labels) or not source.labels:

        def describe(task: Task) -> str:
            labels = ", ".join(task.labels) if task.labels else "free text"
            return f"{task.name} ({labels})"

        raise TransferError(
            f"cannot map the answers of {describe(source)} onto {describe(target)}: transfer "
            "needs two tasks with the same number of classes (mapped by class id) or two "
            "generative tasks"
        )
    return dict(zip(source.labels, target.labels, strict=True))


def transfer_eval(
    run: TrainedRun,
    target: Task,
    *,
    backbone=None,
    data_dir: str | None = None,
    max_examples: int | None = None,
    device: str = "cpu",
) -> tuple[dict[str, Any], Any]:
    """Score ``run``'s best checkpoint on ``target``'s evaluation split, without training.

    Returns:
        (result: a result.json dict with ``task`` = the run's task and ``eval_task`` = target,
        backbone: the loaded backbone, to reuse for the next target of the same checkpoint).
    """
    check_max_examples(max_examples)
    mapping = label_map(run.task, target)
    start = time.time()
    model, backbone = load_scorer(run, backbone)
    model.to(device)
    examples = eval_examples(run, target, data_dir)
    if max_examples is not None:
        examples = examples[:max_examples]
    use_rank = run.cfg.task.eval_mode == "rank" and bool(run.task.labels)
    candidates = candidates_of(run) if use_rank else []
    predictions = predict(
        model,
        backbone.tokenizer,
        encoded_inputs(run, examples, backbone.tokenizer),
        mode="rank" if use_rank else "generate",
        candidates=candidates,
        batch_size=run.cfg.trainer.eval_batch_size,
        max_new_tokens=generation_limit(run, target),
        device=device,
    )
    if run.cfg.objective.uses_sentinel:
        predictions = [strip_sentinel(p) for p in predictions]
    mapped = [mapping.get(p.strip(), p) for p in predictions] if mapping else predictions
    metrics = target.score(mapped, examples)
    axes = {k: run.result.get(k) for k in AXES if k != "task"}
    result = {
        "status": "finished",
        "error": None,
        **axes,
        "method": run.method,
        "task": run.task.name,
        "eval_task": target.name,
        "label_map": mapping,
        "metrics": metrics,
        "score": target.task_score(metrics),
        "checkpoint": run.checkpoint,
        "best_step": run.result.get("best_step"),
        "n_eval": len(examples),  # the number scored
        "max_examples": max_examples,  # the cap asked (None: every example)
        "mode": "rank" if use_rank else "generate",
        "source_run": str(run.run_dir),
        "source_score": run.score,
        "wall_s": time.time() - start,
        "run_dir": str(run.run_dir / TRANSFER_DIR / target.name),
    }
    return result, backbone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.transfer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("paths", nargs="+", help="run directories or sweep directories")
    parser.add_argument(
        "--to", action="append", required=True, metavar="TASK", help="target task (repeatable)"
    )
    parser.add_argument(
        "--data-dir",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="local data of a target task (default: the hub, or generated data for toy tasks)",
    )
    parser.add_argument(
        "--max-examples", type=int, help="score the first N target examples (N >= 1; default all)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace transfer results written before"
    )
    args = parser.parse_args(argv)
    try:
        check_max_examples(args.max_examples)
        data_dirs = dict(_task_dir(x) for x in args.data_dir)
        targets = [get_task(t) for t in dict.fromkeys(args.to)]
        runs = [read_run(d) for d in find_runs(args.paths)]
        pairs = [(r, t) for r in runs for t in targets if t.name != r.task.name]
        if not pairs:
            raise TransferError(
                f"every run was trained on the target task ({', '.join(args.to)}); "
                "transfer scores a run on another task's data"
            )
        for run, target in pairs:  # refuse an unmappable pair before loading anything
            label_map(run.task, target)
        outputs = [r.run_dir / TRANSFER_DIR / t.name / "result.json" for r, t in pairs]
        refuse_existing(outputs, args.overwrite)  # and a result written before
        device = resolve_device(args.device)
        backbones: dict[str, Any] = {}
        for run, target in pairs:
            result, backbones[run.checkpoint] = transfer_eval(
                run,
                target,
                backbone=backbones.get(run.checkpoint),
                data_dir=data_dirs.get(target.name),
                max_examples=args.max_examples,
                device=device,
            )
            out = Path(result["run_dir"])
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "result.json", result)
            metrics = ", ".join(f"{k} {v:.1f}" for k, v in result["metrics"].items())
            print(f"{run.run_dir} ({run.task.name}) -> {target.name}: {metrics}")
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        return 2
    print(
        f"{len(pairs)} transfer evaluation(s) written to <run_dir>/{TRANSFER_DIR}/<task>/; "
        "collect them with python -m repro.collect"
    )
    return 0


def check_max_examples(value: int | None) -> None:
    """Refuse a cap below 1: a negative one sliced off the last examples (``[:-5]``) and 0
    scored them all."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(
            "--max-examples must be an integer >= 1 (omit it to score every example); "
            f"got {value!r}"
        )


def _task_dir(text: str) -> tuple[str, str]:
    task, sep, directory = text.partition("=")
    if not sep or not task or not directory:
        raise ValueError(f"--data-dir {text!r}: expected TASK=DIR, e.g. mrpc=/data/glue/MRPC")
    return task, directory


if __name__ == "__main__":
    sys.exit(main())
