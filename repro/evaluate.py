"""Predict on dev and score with the task's own metrics: greedy ``generate`` or label ``rank``.

Both modes turn model outputs into prediction *strings* and hand them to ``task.score``, so the
metric code is the same whichever way the predictions were made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from repro.causal import target_ids as causal_target_ids
from repro.cli import check_positive_int
from repro.config import SEPARATOR
from repro.data import collate, target_limit
from repro.family import encode_for, family_of, prompted_model
from repro.model import PromptedT5
from repro.objectives import SENTINEL, add_sentinel
from repro.prompts import SoftPrompt
from repro.tasks import get_task
from repro.tasks.base import Example, Task


def strip_sentinel(text: str) -> str:
    """Drop the leading ``<extra_id_0>`` a Span Corruption + Sentinel model is taught to emit."""
    text = text.strip()
    return text[len(SENTINEL) :].strip() if text.startswith(SENTINEL) else text


def decode(tokenizer, sequences: torch.Tensor, prefix: int = 1) -> list[str]:
    """Generated ids [B, prefix+L] (T5: the decoder start first; a causal LM's
    ``PromptedCausalLM.generate``: the new tokens only, ``prefix=0``) → text up to the first eos.

    Sentinels are kept in the text (a span-corruption model emitting ``<extra_id_0>`` is an
    invalid answer, and must stay visible as one); pad and eos are not text.
    """
    texts = []
    for row in sequences[:, prefix:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        row = [t for t in row if t != tokenizer.pad_token_id]
        texts.append(tokenizer.decode(row, skip_special_tokens=False).strip())
    return texts


def candidate_token_ids(model, tokenizer, candidates: Sequence[str]) -> list[list[int]]:
    """The label strings as ``model`` is trained to produce them: T5's targets end with the eos
    its tokenizer adds; a causal LM's (``padding_side == "left"``) as repro.causal encodes them
    (tokens + eos, no bos)."""
    if getattr(model, "padding_side", "right") == "left":
        return causal_target_ids(tokenizer, candidates)
    return [tokenizer(c).input_ids for c in candidates]


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict(
    model: PromptedT5,
    tokenizer,
    input_ids: Sequence[Sequence[int]],
    *,
    mode: str,
    candidates: Sequence[str] = (),
    batch_size: int = 64,
    max_new_tokens: int = 8,
    device: torch.device | str = "cpu",
    members: Sequence[int] | None = None,
) -> list[str]:
    """Prediction strings for tokenised inputs (order kept; batched by length).

    Args:
        members: for a :class:`repro.packed_trainer.PackedT5`, the member (prompt) of each input.
        mode: "generate" (greedy, the paper's) or "rank" (pick the candidate string with the
            highest log-likelihood; needs ``candidates``).
        candidates: the strings to rank, exactly as the model is trained to produce them.
    """
    was_training = model.training
    model.eval()
    side = getattr(model, "padding_side", "right")  # "left": a causal LM (repro.causal)
    candidate_ids = candidate_token_ids(model, tokenizer, candidates)
    predictions: list[str] = [""] * len(input_ids)
    for idx in _batches_by_length([len(x) for x in input_ids], batch_size):
        batch = collate([{"input_ids": input_ids[i]} for i in idx], tokenizer.pad_token_id, side)
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        rows = contextlib.nullcontext()
        if members is not None:
            rows = model.rows(torch.as_tensor([members[i] for i in idx], device=device))
        with rows:
            texts = _predict_batch(
                model, tokenizer, ids, mask, mode, candidates, candidate_ids, max_new_tokens
            )
        for i, text in zip(idx, texts, strict=True):
            predictions[i] = text
    model.train(was_training)
    return predictions


def _predict_batch(model, tokenizer, ids, mask, mode, candidates, candidate_ids, max_new_tokens):
    if mode == "rank":
        best = model.score_candidates(ids, mask, candidate_ids).argmax(dim=1).tolist()
        texts = [candidates[b] for b in best]
    else:
        generated = model.generate(ids, mask, max_new_tokens=max_new_tokens)
        texts = decode(tokenizer, generated, getattr(model, "generated_prefix", 1))
    return texts


def evaluate(
    model: PromptedT5,
    tokenizer,
    task: Task,
    examples: Sequence[Example],
    input_ids: Sequence[Sequence[int]],
    *,
    mode: str = "generate",
    sentinel: bool = False,
    batch_size: int = 64,
    max_new_tokens: int = 8,
    device: torch.device | str = "cpu",
    members: Sequence[int] | None = None,
    score: bool = True,
) -> tuple[dict[str, float], list[str]]:
    """Score ``examples`` with the task's metrics (0–100). Returns (metrics, predictions).

    ``rank`` applies to tasks with a label set; generative tasks (ReCoRD, WSC, SQuAD) are
    always decoded greedily. With ``sentinel`` the candidates carry the ``<extra_id_0>`` prefix
    the model was trained on, and it is stripped from every prediction before scoring.
    ``members`` (a packed model's prompt per example) and ``score=False`` (predictions only,
    metrics ``{}``) serve :func:`repro.packed_trainer.evaluate_members`.
    """
    use_rank = mode == "rank" and bool(task.labels)
    candidates = [f"{SENTINEL} {c}" if sentinel else c for c in task.labels] if use_rank else []
    predictions = predict(
        model,
        tokenizer,
        input_ids,
        mode="rank" if use_rank else "generate",
        candidates=candidates,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        device=device,
        members=members,
    )
    if sentinel:
        predictions = [strip_sentinel(p) for p in predictions]
    return (task.score(predictions, examples) if score else {}), predictions


# --- a given prompt, no training ---------------------------------------------------------------


@dataclass(frozen=True)
class PromptScore:
    """What :func:`score_prompt` measured: the task's metrics (0–100), its single score (their
    mean), one prediction string per eval example (``examples``, in order), and the generation
    cap it used."""

    task: str
    metrics: dict[str, float]
    score: float
    predictions: list[str]
    examples: list[Example]
    max_target_length: int

    @property
    def n_examples(self) -> int:
        return len(self.examples)


def score_prompt(
    prompt: torch.Tensor,
    backbone,
    tokenizer,
    task: Task | str,
    *,
    data_dir: str | Path | None = None,
    examples: Sequence[Example] | None = None,
    max_examples: int | None = None,
    mode: str = "generate",
    sentinel: bool = False,
    sentinel_placement: str = "targets",
    max_input_length: int | None = None,
    max_target_length: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    separator: str = SEPARATOR,
) -> PromptScore:
    """Score a given prompt [P, H] in front of a frozen backbone on a task's eval split.

    The same scoring as a run's evaluation (``repro.run trainer.steps=0 init=from_file``
    writes the same metrics into a run directory): the task's eval split (or ``examples``),
    inputs cut to the task's input limit, greedy decoding capped at the target limit (the
    task's, else its longest label or gold + eos), predictions scored by ``task.score``.

    Args:
        prompt: [P, H] with H = the backbone's d_model (any float dtype; used as fp32).
        task: a :class:`Task` or a registered name, e.g. ``"rte"`` (zero-shot transfer: score
            one task's prompt on another task), or a toy task such as ``"toy_review"`` (the
            toy world's tasks register themselves when first asked for: ``repro.plugins``).
        data_dir: local data (see :meth:`Task.load_records`); None = the hub, or for a task
            the suite generates (the toy tasks) its files under ``$REPRO_CACHE``
            (``~/.cache/repro``), written the first time.
        examples: eval examples to score instead of loading the eval split.
        sentinel: the backbone was prompt-tuned with the ``<extra_id_0>`` target prefix.
        device: default: where the backbone's embeddings are.
        separator: a causal LM's text between input and target (the run's
            ``model.separator``, default a newline); T5 reads no separator.

    Example: a 5-token zero prompt in front of the toy world's smallest shipped model, on its
    ``toy_review`` task, offline (``tests/test_evaluate_api.py`` runs it)::

        >>> import torch
        >>> from importlib.resources import files
        >>> from repro.backbone import load_backbone, load_tokenizer
        >>> from repro.evaluate import score_prompt
        >>> toy = str(files("repro") / "toy_models" / "toy_small" / "step_500")
        >>> backbone, tokenizer = load_backbone(toy), load_tokenizer(toy)
        >>> result = score_prompt(torch.zeros(5, 16), backbone, tokenizer, "toy_review")
        >>> result.task, result.n_examples, list(result.metrics)
        ('toy_review', 200, ['accuracy'])
        >>> 0.0 <= result.score <= 100.0
        True
    """
    if max_examples is not None:  # -5 would slice off the last 5, 0 would keep them all
        check_positive_int("max_examples", max_examples)
    task = get_task(task) if isinstance(task, str) else task
    if examples is None:
        examples = task.examples(task.eval_split, data_dir, train=False)
    examples = list(examples)[:max_examples]
    inputs = add_sentinel(examples, sentinel_placement) if sentinel else examples
    prefix = f"{SENTINEL} " if sentinel else ""
    golds = [prefix + gold for ex in examples for gold in ex.meta.get("answers", (ex.targets,))]
    limit = target_limit(
        [prefix + label for label in task.labels],
        golds,
        tokenizer,
        configured=max_target_length,
        task_default=task.max_target_length,
    )
    family = family_of(backbone.config)
    max_in = max_input_length or task.max_input_length
    tokens = encode_for(family, inputs, tokenizer, max_in, limit.length, separator)
    device = device or backbone.get_input_embeddings().weight.device
    model = prompted_model(backbone, SoftPrompt(prompt)).to(device)
    metrics, predictions = evaluate(
        model,
        tokenizer,
        task,
        examples,
        tokens.input_ids,
        mode=mode,
        sentinel=sentinel,
        batch_size=batch_size,
        max_new_tokens=limit.length,
        device=device,
    )
    return PromptScore(
        task.name, metrics, task.task_score(metrics), predictions, examples, limit.length
    )
