"""Prompt ensembling (paper §6, Table 3): N prompts of one task on one frozen backbone, scored in
one batched forward, and their majority vote.

    python -m repro.ensemble <run dirs or sweep dirs> -o results/<name>   # → <name>.csv, .md

Every example is repeated N times in the batch, copy n behind prompt n
(:class:`MultiPromptT5`; a causal LM's runs: :class:`repro.causal.MultiPromptCausalLM`): the backbone runs once per batch of B·N rows instead of N times over
the data. From that one pass come each prompt's own predictions (its score: the "average
prompt" and "best prompt" rows) and the vote (the "ensemble" row).

**Votes.** ``generate`` mode (the paper's greedy decoding): each prompt votes for its decoded
string (after the sentinel is stripped); the most frequent string wins; a tie goes to the string
of the first prompt, in the order ``--ties`` sets, among those that gave a tied string:
``seed`` (default) the lowest seed, then run directory — a rule that reads no label;
``dev`` the best dev score in ``result.json`` (then run directory), which the paper does not
state and which uses the dev labels the table is scored on. ``rank`` mode: each prompt votes for
the label with its highest log-likelihood; a tie goes to the tied label with the highest
log-likelihood summed over all N prompts (then the lower class id), label-free whatever
``--ties`` says. Generative tasks (ReCoRD, WSC, SQuAD) always vote on decoded strings. The
``.csv`` (column ``ties``) and the ``.md`` say which rule broke the ties of each task.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from repro.causal import MultiPromptCausalLM
from repro.cli import USER_ERRORS, cli_error_message
from repro.collect.frame import write_frame
from repro.data import collate
from repro.evaluate import _batches_by_length, candidate_token_ids, decode, strip_sentinel
from repro.files import refuse_existing, write_text_atomic
from repro.model import PromptedT5
from repro.tasks import SUPERGLUE
from repro.trained import (
    RunReadError,
    TrainedRun,
    candidates_of,
    encoded_inputs,
    eval_examples,
    find_runs,
    generation_limit,
    load_backbone_of,
    read_run,
)
from repro.trainer import resolve_device

ROWS = ("average", "best", "ensemble")
# How a generate-mode vote breaks a tie (``--ties``), and what the table says of each rule;
# ``likelihood`` is rank mode's own rule.
TIE_RULES = {
    "seed": "the string of the lowest-seed prompt among the tied (label-free)",
    "dev": "the string of the best-dev-score prompt among the tied (uses dev labels)",
    "likelihood": "the label with the highest log-likelihood summed over the prompts (label-free)",
}
GENERATE_TIES = ("seed", "dev")
# Lester et al. 2021, Table 3: SuperGLUE dev, T5-XXL, 5 prompts.
PAPER_SUPERGLUE = {"average": 90.5, "best": 91.0, "ensemble": 91.3}


class EnsembleError(RunReadError):
    """Runs that cannot be ensembled together (other backbones, tasks, lengths): one line."""


# --- the batched forward -------------------------------------------------------------------


def prepend_prompts(
    prompts: Tensor, embeds: Tensor, attention_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Place prompt ``r mod N`` in front of row r.

    Args:
        prompts: [N, P, H].
        embeds: [B·N, T, H] input embeddings, example b under prompt n at row b·N + n.
        attention_mask: [B·N, T].

    Returns:
        ([B·N, P+T, H] embeddings, [B·N, P+T] mask with P leading ones).
    """
    n, p, _ = prompts.shape
    rows = embeds.shape[0]
    if rows % n:
        raise ValueError(f"{rows} rows are not a whole number of copies of {n} prompts")
    prefix = prompts.to(embeds.dtype).repeat(rows // n, 1, 1)
    ones = attention_mask.new_ones(rows, p)
    return torch.cat([prefix, embeds], dim=1), torch.cat([ones, attention_mask], dim=1)


class MultiPromptT5(PromptedT5):
    """A frozen T5 with N prompts: row r of a batch is read behind prompt ``r mod N``.

    It keeps :class:`repro.model.PromptedT5`'s greedy decoding and label ranking, which reach
    the prompt only through ``encoder_inputs``; callers repeat each example N times
    (``repeat_interleave``). Nothing here is trainable.
    """

    def __init__(self, backbone: nn.Module, prompts: Tensor):
        nn.Module.__init__(self)  # not PromptedT5's: there is no single trainable prompt
        width = backbone.get_input_embeddings().embedding_dim
        if prompts.dim() != 3 or prompts.shape[-1] != width:
            raise ValueError(
                f"prompts of shape {tuple(prompts.shape)} do not fit this backbone: "
                f"expected [N, P, {width}]"
            )
        self.backbone = backbone.requires_grad_(False)
        self.register_buffer("prompts", prompts.detach().to(torch.float32).clone())
        self.z_loss = 0.0

    @property
    def n_prompts(self) -> int:
        return self.prompts.shape[0]

    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return prepend_prompts(self.prompts, embeds, attention_mask)


@torch.no_grad()
def predict_all(
    model: MultiPromptT5,
    tokenizer,
    input_ids: Sequence[Sequence[int]],
    *,
    candidates: Sequence[str] = (),
    batch_size: int = 64,
    max_new_tokens: int = 8,
    device: torch.device | str = "cpu",
) -> tuple[list[list[str]], Tensor | None]:
    """Every prompt's prediction for every input, ``batch_size`` examples (× N rows) a forward.

    Returns:
        (texts [E][N], label log-likelihoods [E, N, C] when ``candidates`` are given (rank mode:
        ``texts`` are then each prompt's top candidate), else None).
    """
    n, side = model.n_prompts, getattr(model, "padding_side", "right")  # "left": causal
    model.eval()
    candidate_ids = candidate_token_ids(model, tokenizer, candidates)
    texts: list[list[str]] = [[] for _ in input_ids]
    scores = torch.zeros(len(input_ids), n, len(candidates)) if candidates else None
    for idx in _batches_by_length([len(x) for x in input_ids], batch_size):
        batch = collate([{"input_ids": input_ids[i]} for i in idx], tokenizer.pad_token_id, side)
        ids = batch["input_ids"].to(device).repeat_interleave(n, dim=0)  # [B·N, T]
        mask = batch["attention_mask"].to(device).repeat_interleave(n, dim=0)
        if candidates:
            batch_scores = model.score_candidates(ids, mask, candidate_ids).view(len(idx), n, -1)
            scores[idx] = batch_scores.float().cpu()
            flat = [candidates[c] for c in batch_scores.argmax(-1).flatten().tolist()]
        else:
            out = model.generate(ids, mask, max_new_tokens=max_new_tokens)
            flat = decode(tokenizer, out, getattr(model, "generated_prefix", 1))
        for j, i in enumerate(idx):
            texts[i] = flat[j * n : (j + 1) * n]
    return texts, scores


# --- the vote --------------------------------------------------------------------------------


def majority_vote(texts: Sequence[Sequence[str]]) -> list[str]:
    """Per example, the most frequent of the N strings; a tie goes to the string of the earliest
    prompt (prompts come in the tie-break order of :func:`order_runs`) among those that gave a
    tied string."""
    out = []
    for row in texts:
        counts = collections.Counter(row)
        top = max(counts.values())
        out.append(next(t for t in row if counts[t] == top))
    return out


def rank_vote(scores: Tensor, labels: Sequence[str]) -> list[str]:
    """Per example, the label most prompts rank first ([E, N, C] log-likelihoods); a tie goes
    to the tied label with the highest log-likelihood summed over the prompts, then the lower
    class id."""
    n_labels = scores.shape[-1]
    votes = torch.nn.functional.one_hot(scores.argmax(-1), n_labels).sum(1)  # [E, C]
    total = scores.sum(1)  # [E, C]
    out = []
    for v, s in zip(votes.tolist(), total.tolist(), strict=True):
        top = max(v)
        tied = [c for c in range(n_labels) if v[c] == top]
        out.append(labels[max(tied, key=lambda c: (s[c], -c))])
    return out


# --- one task's ensemble ---------------------------------------------------------------------


@dataclass
class TaskEnsemble:
    """What ``ensemble_task`` measured for one task: each prompt's and the vote's metrics."""

    task: str
    runs: list[TrainedRun]
    per_prompt: list[dict[str, float]]  # metrics of prompt n (same order as runs)
    per_prompt_score: list[float]
    ensemble: dict[str, float]
    ensemble_score: float
    mode: str
    seconds: float
    ties: str = "seed"  # the rule that broke the vote's ties (TIE_RULES)
    voted: list[str] = field(default_factory=list)  # the vote's prediction per example

    def rows(self) -> dict[str, tuple[float, dict[str, float]]]:
        """Table 3's rows: {row: (score, metrics)}."""
        best = max(range(len(self.runs)), key=lambda i: self.per_prompt_score[i])
        names = self.per_prompt[0].keys()
        mean = {m: sum(p[m] for p in self.per_prompt) / len(self.per_prompt) for m in names}
        avg_score = sum(self.per_prompt_score) / len(self.per_prompt_score)
        return {
            "average": (avg_score, mean),
            "best": (self.per_prompt_score[best], self.per_prompt[best]),
            "ensemble": (self.ensemble_score, self.ensemble),
        }


def order_runs(runs: Sequence[TrainedRun], ties: str = "seed") -> list[TrainedRun]:
    """The vote's tie-break order: ``seed``, lowest seed first; ``dev``, best dev score first;
    then by directory."""
    if ties == "seed":
        return sorted(runs, key=lambda r: (r.cfg.seed, str(r.run_dir)))
    if ties == "dev":
        return sorted(
            runs, key=lambda r: (-(r.score if r.score is not None else -1e9), str(r.run_dir))
        )
    raise ValueError(f"unknown tie rule {ties!r}; allowed: {', '.join(GENERATE_TIES)}")


def ensemble_task(
    runs: Sequence[TrainedRun],
    backbone,
    *,
    mode: str | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    ties: str = "seed",
) -> TaskEnsemble:
    """Score N prompt runs of one task in one batched pass and vote (see the module docs);
    ``ties`` breaks a generate-mode tie (``seed`` | ``dev``)."""
    runs = order_runs(runs, ties)
    first = runs[0]
    task = first.task
    mode = mode or first.cfg.task.eval_mode
    use_rank = mode == "rank" and bool(task.labels)
    examples = eval_examples(first)
    input_ids = encoded_inputs(first, examples, backbone.tokenizer)
    prompts = torch.stack([r.best_prompt() for r in runs])
    if first.result.get("family") == "causal":
        if len({r.cfg.model.positions for r in runs}) > 1:
            raise EnsembleError("the runs number their tokens differently (model.positions)")
        if len({r.cfg.model.separator for r in runs}) > 1:
            raise EnsembleError("the runs end their inputs differently (model.separator)")
        model = MultiPromptCausalLM(backbone.model, prompts, first.cfg.model.positions)
    else:
        model = MultiPromptT5(backbone.model, prompts)
    model = model.to(device)
    candidates = candidates_of(first) if use_rank else []
    start = time.perf_counter()
    texts, scores = predict_all(
        model,
        backbone.tokenizer,
        input_ids,
        candidates=candidates,
        batch_size=batch_size or first.cfg.trainer.eval_batch_size,
        max_new_tokens=generation_limit(first),
        device=device,
    )
    seconds = time.perf_counter() - start
    sentinel = first.cfg.objective.uses_sentinel
    texts = [[strip_sentinel(t) if sentinel else t for t in row] for row in texts]
    per_prompt = [task.score([row[n] for row in texts], examples) for n in range(len(runs))]
    voted = rank_vote(scores, task.labels) if use_rank else majority_vote(texts)
    ensemble = task.score(voted, examples)
    return TaskEnsemble(
        task=task.name,
        runs=list(runs),
        per_prompt=per_prompt,
        per_prompt_score=[task.task_score(m) for m in per_prompt],
        ensemble=ensemble,
        ensemble_score=task.task_score(ensemble),
        mode="rank" if use_rank else "generate",
        seconds=seconds,
        ties="likelihood" if use_rank else ties,
        voted=voted,
    )


# --- which runs go together ------------------------------------------------------------------


def group_runs(runs: Sequence[TrainedRun]) -> dict[str, list[TrainedRun]]:
    """Runs by task, refusing (EnsembleError, one line) what cannot share one batched forward:
    several backbones, a task with one prompt, prompts of different lengths or objectives."""
    other = [r for r in runs if r.method != "prompt"]
    if other:
        raise EnsembleError(
            f"{other[0].run_dir} is a method={other[0].method} run; an ensemble shares one "
            "frozen backbone, so it takes prompt-tuning runs only"
        )
    backbones = collections.Counter(r.checkpoint for r in runs)
    if len(backbones) > 1:
        listed = "; ".join(f"{c} ({n} run{'s' * (n > 1)})" for c, n in backbones.items())
        raise EnsembleError(
            f"the runs were trained on different backbones: {listed}; an ensemble shares one "
            "frozen backbone: give runs of one backbone"
        )
    by_task: dict[str, list[TrainedRun]] = collections.defaultdict(list)
    for run in runs:
        by_task[run.task.name].append(run)
    single = sorted(t for t, rs in by_task.items() if len(rs) < 2)
    if single and len(by_task) > 1 and len(single) == len(by_task):
        raise EnsembleError(
            f"the runs are of different tasks ({', '.join(sorted(by_task))}), one prompt each; "
            "an ensemble votes among prompts of one task: give >= 2 runs per task"
        )
    if single:
        raise EnsembleError(
            f"task {single[0]} has only 1 prompt ({by_task[single[0]][0].run_dir}); an ensemble "
            "needs >= 2 prompts of the same task and backbone"
        )
    for task, rs in sorted(by_task.items()):
        for what, key in (
            ("prompt lengths", lambda r: r.cfg.prompt_len),
            ("objectives", lambda r: (r.cfg.objective.name, r.cfg.objective.sentinel_placement)),
        ):
            values = sorted({str(key(r)) for r in rs})
            if len(values) > 1:
                raise EnsembleError(
                    f"task {task}: the prompts have different {what} ({', '.join(values)}); "
                    "one batched forward needs prompts of one shape and objective"
                )
    return dict(sorted(by_task.items()))


# --- the frame and the table -----------------------------------------------------------------

# The run frame's axes (repro.collect.AXES) an ensemble row keeps: not task (its own column)
# nor seed (it pools seeds: column `seeds`).
AXES = ("size", "params", "objective", "lm_adapt_steps", "lm_adapt_source", "prompt_len", "init")


def ensemble_frame(results: Sequence[TaskEnsemble]) -> pd.DataFrame:
    """One row per (task, Table 3 row): the run frame's axes, ``ensemble_row``, ``n_prompts``,
    ``score``, ``metric/<name>``, ``mode``; plus the SuperGLUE rows (the mean of the 8 task
    scores, per row) when every SuperGLUE task is there, else a ``mean`` row over the tasks
    given when there are several."""
    rows = []
    for res in results:
        axes = {a: res.runs[0].result.get(a) for a in AXES}
        seeds = ",".join(str(r.cfg.seed) for r in res.runs)
        for name, (score, metrics) in res.rows().items():
            rows.append(
                {
                    **axes,
                    "task": res.task,
                    "ensemble_row": name,
                    "n_prompts": len(res.runs),
                    "seeds": seeds,
                    "score": score,
                    **{f"metric/{k}": v for k, v in metrics.items()},
                    "mode": res.mode,
                    "ties": res.ties,
                    "eval_s": res.seconds,
                    "run_dirs": ";".join(str(r.run_dir) for r in res.runs),
                }
            )
    frame = pd.DataFrame(rows)
    tasks = [r.task for r in results]
    overall = "superglue" if set(SUPERGLUE) <= set(tasks) else ("mean" if len(tasks) > 1 else None)
    if overall:
        keep = frame[frame["task"].isin(SUPERGLUE)] if overall == "superglue" else frame
        for name in ROWS:
            part = keep[keep["ensemble_row"] == name]
            base = {a: part[a].iloc[0] for a in AXES}
            rows.append(
                {
                    **base,
                    "task": overall,
                    "ensemble_row": name,
                    "n_prompts": int(part["n_prompts"].min()),
                    "score": float(part["score"].mean()),
                    "mode": ",".join(sorted(set(part["mode"]))),
                    "ties": ",".join(sorted(set(part["ties"]))),
                }
            )
        frame = pd.DataFrame(rows)
    return frame


def ensemble_table(frame: pd.DataFrame) -> str:
    """Markdown: one line per task, Table 3's columns; the paper's SuperGLUE row beside ours."""
    lines = [
        "| task | prompts | average | best | ensemble |",
        "|---|---|---|---|---|",
    ]
    for task, part in frame.groupby("task", sort=False):
        score = part.set_index("ensemble_row")["score"]
        cells = " | ".join(f"{score[r]:.1f}" for r in ROWS)
        lines.append(f"| {task} | {int(part['n_prompts'].min())} | {cells} |")
    paper = " / ".join(f"{PAPER_SUPERGLUE[r]}" for r in ROWS)
    tasks = frame[~frame["task"].isin(("superglue", "mean"))].drop_duplicates("task")
    lines += ["", "Ties in the vote go to:"]
    for rule, part in tasks.groupby("ties", sort=True):
        lines.append(f"- {TIE_RULES[rule]} (`{rule}`): {', '.join(part['task'])}")
    lines += [
        "",
        f"Paper (Lester et al. 2021, Table 3; T5-XXL, 5 prompts, SuperGLUE dev): average / "
        f"best / ensemble = {paper}.",
    ]
    size = frame["size"].dropna()
    if not size.empty and str(size.iloc[0]) not in ("small", "base", "large", "xl", "xxl"):
        lines.append(f"Ours: backbone size {size.iloc[0]!s}, not a T5 size: no comparison.")
    return "\n".join(lines) + "\n"


# --- CLI -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.ensemble", description=__doc__.split("\n\n")[0]
    )  # the docstring's first paragraph, whole
    parser.add_argument("paths", nargs="+", help="run directories or sweep directories")
    parser.add_argument("-o", "--output", required=True, help="output prefix: writes .csv, .md")
    parser.add_argument("--mode", choices=("generate", "rank"), help="default: the runs' own")
    parser.add_argument("--batch-size", type=int, help="examples per forward (× N rows)")
    parser.add_argument(
        "--ties",
        choices=GENERATE_TIES,
        default="seed",
        help="a generate-mode tie goes to the string of the lowest-seed prompt among the tied "
        "(seed, default: reads no label) or of the best-dev-score one (dev: uses dev labels); "
        "rank mode always takes the highest summed log-likelihood",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    output = Path(args.output)
    try:
        refuse_existing([output.with_suffix(".csv"), output.with_suffix(".md")], args.overwrite)
        runs = [read_run(d) for d in find_runs(args.paths)]
        groups = group_runs(runs)
        device = resolve_device(args.device)
        backbone = load_backbone_of(runs[0])
        backbone.model.to(device)
        results = []
        for task, task_runs in groups.items():
            res = ensemble_task(
                task_runs,
                backbone,
                mode=args.mode,
                batch_size=args.batch_size,
                device=device,
                ties=args.ties,
            )
            results.append(res)
            print(
                f"{task}: {len(task_runs)} prompts, one batched pass in {res.seconds:.1f} s "
                f"({res.mode}, ties: {res.ties}); ensemble {res.ensemble_score:.1f}, prompts "
                + ", ".join(f"{s:.1f}" for s in res.per_prompt_score)
            )
        frame = ensemble_frame(results)
        table = ensemble_table(frame)
        write_frame(frame, output.with_suffix(".csv"))
        write_text_atomic(output.with_suffix(".md"), table)
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        return 2
    print(table, end="")
    print(f"-> {output.with_suffix('.csv')}, {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
