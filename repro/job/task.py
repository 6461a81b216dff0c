"""One task of a job, start to end: its examples and tokens, the method's model and initial
prompt, training with an eval every N steps (the best kept), and its ``result.json``. A mixture
(``method=model_multitask``) trains one model on several tasks' data, then writes each task's
result.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from repro import files, objectives
from repro.backbone import count_parameters
from repro.causal import LoraCausalLM, TunedCausalLM
from repro.cli import USER_ERRORS
from repro.config import Config
from repro.data import target_limit
from repro.evaluate import evaluate
from repro.family import CAUSAL, T5, encode_for, family_of, prompted_model
from repro.interop import fit_prompt, read_prompt
from repro.methods import get_method
from repro.model import LoraT5, TunedT5
from repro.precision import cpu_numerics, resolve_precision
from repro.prompts import SoftPrompt, init_prompt, label_token_ids, save_prompt, text_token_ids
from repro.tasks import get_task, task_names
from repro.tasks.base import data_dir_for
from repro.tracking import MetricsLog
from repro.trainer import StopFlag, resolve_device, train

# The logger its lines have always carried (``[repro.run]``).
log = logging.getLogger("repro.run")


def versions() -> dict[str, str]:
    import transformers  # loaded here, not at start-up: a rejected job never needs it

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


@dataclasses.dataclass
class TaskData:
    """One task's examples and tokens for a run (train with the objective's sentinel); the same
    for every prompt of a pack (repro.pack)."""

    task: Any
    train_examples: list
    dev_examples: list
    train_tokens: Any  # repro.data.Encoded
    dev_tokens: Any
    limit: Any  # repro.data.TargetLimit
    sentinel: bool


def prepare_task(
    cfg: Config, task_name: str, tokenizer, *, name_prefix: bool = False, family: str = T5
) -> TaskData:
    """Load, (sentinel-)prefix and tokenise one task's train and dev examples.

    Args:
        family: the backbone's (``repro.family``): how an example becomes tokens.
        name_prefix: put the task's name in front of every input (``"rte hypothesis: ..."``):
            multi-task model tuning, where one model must tell the tasks apart (the paper's §3.1:
            "a text prefix indicating the task name"); the word T5's mixture uses
            (``Task.mixture_prefix``: ``"wsc: ..."``).
    """
    task = get_task(task_name)
    # several tasks share task.data_dir: each reads its own sub-directory
    tasks = task_names(cfg.task.name)
    data_dir = data_dir_for(task, cfg.task.data_dir, cfg.paths.cache_dir, tasks=tasks)
    # trainer.steps=0 only scores the initial prompt: no training data are read
    train_examples = load_examples(task, task.train_split, data_dir) if cfg.trainer.steps else []
    dev_examples = load_examples(task, task.eval_split, data_dir)
    if cfg.task.max_eval_examples:
        dev_examples = dev_examples[: cfg.task.max_eval_examples]
    if name_prefix:
        word = task.mixture_prefix or task.name
        train_examples = [
            dataclasses.replace(e, inputs=f"{word} {e.inputs}") for e in train_examples
        ]
        dev_examples = [dataclasses.replace(e, inputs=f"{word} {e.inputs}") for e in dev_examples]
    sentinel = cfg.objective.uses_sentinel
    if sentinel:
        train_examples = objectives.add_sentinel(train_examples, cfg.objective.sentinel_placement)
        dev_inputs = objectives.add_sentinel(dev_examples, cfg.objective.sentinel_placement)
    else:
        dev_inputs = dev_examples
    max_in = cfg.task.max_input_length or task.max_input_length
    limit = target_limit_of(cfg, task, train_examples, dev_examples, tokenizer)
    sep = cfg.model.separator
    train_tokens = encode_for(family, train_examples, tokenizer, max_in, limit.length, sep)
    dev_tokens = encode_for(family, dev_inputs, tokenizer, max_in, limit.length, sep)
    return TaskData(task, train_examples, dev_examples, train_tokens, dev_tokens, limit, sentinel)


def build_model(cfg: Config, backbone, tokenizer, task):
    """The method's model (``repro.methods``) for the backbone's family: a prompt in front of
    the frozen backbone (initialised as ``cfg.init`` says, from the task's class labels), LoRA
    beside its layers, or the backbone itself, every weight trainable."""
    if get_method(cfg.method.name).trains == "lora":
        m = cfg.method
        lora = dict(r=m.r, alpha=m.alpha, dropout=m.dropout, target_modules=m.target_modules)
        lora.update(z_loss=cfg.trainer.z_loss, seed=cfg.seed)
        if family_of(backbone.config) == CAUSAL:  # the roles mapped by its model_type
            return LoraCausalLM(backbone, **lora, positions=cfg.model.positions)
        return LoraT5(backbone, **lora)
    if get_method(cfg.method.name).trains == "backbone":
        if family_of(backbone.config) == CAUSAL:
            model = TunedCausalLM(backbone, cfg.trainer.z_loss, cfg.model.positions)
        else:
            model = TunedT5(backbone, z_loss=cfg.trainer.z_loss)
        model.tokenizer = tokenizer  # saved into best/ and last/: a loadable checkpoint
        return model
    weight = initial_prompt(cfg, task, backbone, tokenizer)
    return prompted_model(
        backbone, SoftPrompt(weight), z_loss=cfg.trainer.z_loss, positions=cfg.model.positions
    )


def initial_prompt(cfg: Config, task, backbone, tokenizer):
    """The run's initial prompt [P, H] (``cfg.init`` from ``cfg.seed``)."""
    table = backbone.get_input_embeddings().weight
    init_kwargs = {"population": cfg.init.population, "low": cfg.init.low, "high": cfg.init.high}
    if cfg.init.scale != "fixed":
        init_kwargs["scale"] = cfg.init.scale
    if cfg.init.name == "class_label":
        init_kwargs["class_token_ids"] = label_token_ids(tokenizer, task.class_words)
    elif cfg.init.name == "text":
        init_kwargs["text_ids"] = text_token_ids(tokenizer, cfg.init.text, cfg.init.text_rule)
        init_kwargs["text_rule"] = cfg.init.text_rule
    elif cfg.init.name == "from_file":
        init_kwargs["prompt"] = init_file_prompt(cfg, table.shape[1])
    return init_prompt(cfg.init.name, table, cfg.prompt_len, seed=cfg.seed, **init_kwargs)


def run_precision(cfg: Config) -> str:
    """The precision the job computes in on this machine (:mod:`repro.precision`), known before
    anything is loaded: a device this machine lacks, or bf16 on a GPU without it, is refused."""
    if cfg.model.device_map is None:
        device = resolve_device(cfg.trainer.device)
    else:  # from_pretrained places the backbone: on the GPUs if there are any
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_precision(cfg.trainer.precision, device)


def place(cfg: Config, model, backbone):
    """Move ``model`` to the run's device; returns the device inputs go to."""
    if cfg.model.device_map is None:
        device = resolve_device(cfg.trainer.device)
        model.to(device)
        return device
    # the backbone was placed by from_pretrained; inputs and prompt go where it starts
    device = backbone.get_input_embeddings().weight.device
    if hasattr(model, "prompt"):
        model.prompt.to(device)
    return device


def evaluate_task(cfg: Config, model, tokenizer, data: TaskData, device) -> dict[str, float]:
    """One task's dev metrics for the model as it stands (0–100)."""
    metrics, _ = evaluate(
        model,
        tokenizer,
        data.task,
        data.dev_examples,
        data.dev_tokens.input_ids,
        mode=cfg.task.eval_mode,
        sentinel=data.sentinel,
        batch_size=cfg.trainer.eval_batch_size,
        max_new_tokens=data.limit.length,
        device=device,
    )
    return metrics


def task_result(
    cfg: Config,
    data: TaskData,
    model,
    backbone,
    checkpoint: str,
    state,
    out_dir,
    sink,
    start: float,
    precision: str,
    **extra,
) -> dict[str, Any]:
    """One task's result.json (``metrics``/``score``: the best checkpoint's on dev;
    ``precision``: the one the run computed in, :func:`repro.precision.resolve_precision`)."""
    trainable = sum(p.numel() for p in model.trainable_parameters())
    total = count_parameters(backbone)
    frozen = sum(p.numel() for p in backbone.parameters() if not p.requires_grad)
    return {
        "status": "finished",
        "error": None,
        **cfg.axes,
        "task": data.task.name,
        "params": cfg.model.params or total,
        "checkpoint": checkpoint,
        # t5 | causal: the checkpoint's own (its config's is_encoder_decoder), repro.family
        "family": family_of(backbone.config),
        "best_step": state.best_step,
        "metrics": state.best_metrics,
        "score": state.best_score,
        "steps": state.step,
        "trainable_params": trainable,
        # what the run keeps frozen (and shares with every other task): all of T5 in prompt
        # tuning, nothing in model tuning (best/ holds a full copy)
        "frozen_params": frozen,
        "n_train": len(data.train_examples),
        "n_eval": len(data.dev_examples),
        "truncated": {
            "train_inputs": data.train_tokens.n_truncated_inputs,
            "train_targets": data.train_tokens.n_truncated_targets,
            "eval_inputs": data.dev_tokens.n_truncated_inputs,
        },
        # The target limit (eos included; also the generation cap), where it came from, and how
        # many eval golds are longer than it (0 unless task.max_target_length was set shorter).
        "max_target_length": data.limit.length,
        "max_target_length_source": data.limit.source,
        "eval_golds": data.limit.n_golds,
        "eval_golds_over_target_limit": data.limit.n_golds_over,
        "train_s": state.train_seconds,
        "precision": precision,
        # micro-batches per step (an out-of-memory retry's count if it grew): with dropout the
        # masks depend on it, so runs with other counts agree in distribution, not bit for bit
        "grad_accum": state.grad_accum or cfg.trainer.grad_accum,
        "wall_s": time.time() - start,
        "versions": versions(),
        # which CPU kernels computed it (repro.numerics pins them so that machines agree)
        "cpu_numerics": cpu_numerics(),
        "run_dir": str(out_dir),
        "wandb_id": getattr(sink, "run_id", None),
        **extra,
    }


def train_task(
    cfg: Config,
    task_name: str,
    backbone,
    tokenizer,
    checkpoint: str,
    out_dir: Path,
    sink,
    stop: StopFlag | None = None,
) -> dict[str, Any]:
    """Train and score one task's prompt (or the whole model) in ``out_dir``; returns its
    result.json."""
    start = time.time()
    data = prepare_task(cfg, task_name, tokenizer, family=family_of(backbone.config))
    model = build_model(cfg, backbone, tokenizer, data.task)
    device = place(cfg, model, backbone)
    precision = resolve_precision(cfg.trainer.precision, device)
    sidecar = {"backbone": checkpoint, "init": cfg.init.name, "task": data.task.name}
    if cfg.method.name != "prompt":
        sidecar = {"backbone": checkpoint, "method": cfg.method.name, "task": data.task.name}
    else:
        save_initial_prompt(out_dir, model.prompt.weight, sidecar)
    state = train(
        model,
        data.train_tokens.input_ids,
        data.train_tokens.labels,
        evaluate_fn=lambda: evaluate_task(cfg, model, tokenizer, data, device),
        score_fn=data.task.task_score,
        cfg=cfg.trainer,
        out_dir=out_dir,
        seed=cfg.seed,
        pad_id=tokenizer.pad_token_id,
        sink=sink,
        sidecar=sidecar,
        device=device,
        stop=stop,
        precision=precision,
    )
    return task_result(
        cfg, data, model, backbone, checkpoint, state, out_dir, sink, start, precision
    )


def save_initial_prompt(out_dir: Path, weight, sidecar) -> None:
    """``<out_dir>/init/``: the untrained prompt, repro.interpret's baseline (written once)."""
    if not (out_dir / "init").is_dir():
        files.publish_dir(out_dir / "init", lambda d: save_prompt(weight, d, step=0, **sidecar))


def train_mixture(
    cfg: Config,
    names: tuple[str, ...],
    backbone,
    tokenizer,
    checkpoint: str,
    run_dir: Path,
    sink,
    stop: StopFlag | None = None,
) -> dict[str, dict[str, Any]]:
    """Multi-task model tuning: one model on the mixture of ``names`` in ``run_dir`` (one
    ``best/``, ``last/``, ``metrics.jsonl``), then each task's result.json from the best step.

    The mixture is examples-proportional (T5's ``rate_num_examples``): the tasks' training
    examples pooled and drawn in the trainer's usual batch order, each input prefixed with its
    task's name. Every eval scores every task's dev split (metrics ``<task>/<metric>`` and
    ``<task>/score``); ``best/`` keeps the step with the best mean task score (the SuperGLUE
    score for task=superglue). Each task's result is read from ``metrics.jsonl`` at its own
    best eval (T5's rule, ``selection: "task"``), with both rules under ``selections``
    (``task``, ``mean``: the best-mean step, whose model ``best/`` holds).
    """
    start = time.time()
    family = family_of(backbone.config)
    datas = [prepare_task(cfg, name, tokenizer, name_prefix=True, family=family) for name in names]
    model = build_model(cfg, backbone, tokenizer, datas[0].task)
    device = place(cfg, model, backbone)
    precision = resolve_precision(cfg.trainer.precision, device)

    def evaluate_fn() -> dict[str, float]:
        metrics: dict[str, float] = {}
        for data in datas:
            own = evaluate_task(cfg, model, tokenizer, data, device)
            metrics.update({f"{data.task.name}/{k}": v for k, v in own.items()})
            metrics[f"{data.task.name}/score"] = data.task.task_score(own)
        return metrics

    def score_fn(metrics) -> float:
        return sum(metrics[f"{name}/score"] for name in names) / len(names)

    state = train(
        model,
        [ids for data in datas for ids in data.train_tokens.input_ids],
        [labels for data in datas for labels in data.train_tokens.labels],
        evaluate_fn=evaluate_fn,
        score_fn=score_fn,
        cfg=cfg.trainer,
        out_dir=run_dir,
        seed=cfg.seed,
        pad_id=tokenizer.pad_token_id,
        sink=sink,
        sidecar={"backbone": checkpoint, "method": cfg.method.name, "tasks": list(names)},
        device=device,
        stop=stop,
        precision=precision,
    )
    evals = [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if r.get("kind") == "eval"]
    results = {}
    for data in datas:
        name = data.task.name
        mean = at_eval(state.best_metrics, state.best_step, name)
        own = task_best(evals, name) or mean
        result = task_result(
            cfg,
            data,
            model,
            backbone,
            checkpoint,
            state,
            run_dir / name,
            sink,
            start,
            precision,
            mixture=list(names),
            model_dir=str(run_dir),  # best/ and last/ of the one model live there
        )
        selections = {"task": own, "mean": mean}
        results[name] = {**result, **own, "selection": "task", "selections": selections}
    return results


def at_eval(record, step: int, name: str) -> dict[str, Any]:
    """Task ``name``'s part of one eval of a mixture: its step, metrics and score."""
    prefix = f"{name}/"
    metrics = {
        k.removeprefix(prefix): v
        for k, v in record.items()
        if k.startswith(prefix) and k != f"{prefix}score"
    }
    return {"best_step": step, "metrics": metrics, "score": record.get(f"{prefix}score")}


def task_best(evals, name: str) -> dict[str, Any] | None:
    """Task ``name`` at its own best eval of ``evals`` (a mixture's metrics.jsonl), the earliest
    of equal scores as the trainer keeps the earliest best: T5's rule, "for models fine-tuned on
    multiple tasks, we choose the best checkpoint for each task independently" (Raffel et al.
    2020, §3.1.2). None if no eval scored it."""
    key, best = f"{name}/score", None
    for record in evals:
        if record.get(key) is not None and (best is None or record[key] > best[key]):
            best = record
    return None if best is None else at_eval(best, best["step"], name)


def init_file_prompt(cfg: Config, d_model: int):
    """The prompt ``init.path`` holds, refused in one line unless it is [prompt_len, d_model]."""
    prompt, _ = read_prompt(cfg.init.path)
    return fit_prompt(prompt, cfg.prompt_len, d_model, f"init.path={cfg.init.path}")


def target_limit_of(cfg: Config, task, train_examples, dev_examples, tokenizer):
    """The task's target limit for this run (:func:`repro.data.target_limit`), warning when eval
    golds do not fit. ``train_examples`` carry the objective's sentinel already, ``dev_examples``
    not: their golds get it here. Without training examples (``trainer.steps=0``) the task's
    label strings stand for the training targets, so a label task gets a trained run's limit."""
    prefix = f"{objectives.SENTINEL} " if cfg.objective.uses_sentinel else ""
    golds = [prefix + gold for ex in dev_examples for gold in ex.meta.get("answers", (ex.targets,))]
    train_targets = [ex.targets for ex in train_examples] or [prefix + w for w in task.labels]
    limit = target_limit(
        train_targets,
        golds,
        tokenizer,
        configured=cfg.task.max_target_length,
        task_default=task.max_target_length,
    )
    if limit.n_golds_over:
        origin = {
            "config": f"task.max_target_length={limit.length}",
            "task": f"task {task.name!r}'s own limit of {limit.length} tokens",
        }.get(limit.source, f"the limit of {limit.length} tokens")
        log.warning(
            "task %s: %d of %d eval gold targets are longer than %s (longest: %d tokens with "
            "eos) and can never be produced; leave task.max_target_length unset to size it "
            "from the data",
            task.name,
            limit.n_golds_over,
            limit.n_golds,
            origin,
            limit.longest,
        )
    return limit


def load_examples(task, split: str, data_dir: str | None) -> list:
    """``task.examples``, with a label outside the task's label set named (not an IndexError)."""
    try:
        return task.examples(split, data_dir)
    except (IndexError, KeyError, TypeError):
        if not task.labels:
            raise
        allowed = range(len(task.labels))
        records = task.load_records(split, data_dir)
        bad = sorted({repr(r.get("label")) for r in records if r.get("label") not in allowed})
        if not bad:
            raise
        raise ValueError(
            f"task {task.name!r}: split {split!r} has label(s) {', '.join(bad)} outside the "
            f"task's label set; allowed: {', '.join(f'{i} ({w})' for i, w in enumerate(task.labels))}"
        ) from None


def failed_result(cfg: Config | None, task_name: str, out_dir: Path, error: BaseException):
    axes = cfg.axes if cfg is not None else {}
    return {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        # the user's to fix (bad data, path, value: the CLI exits 2) or a bug (exit 1)
        "user_error": isinstance(error, USER_ERRORS),
        **axes,
        "task": task_name,
        "run_dir": str(out_dir),
        "versions": versions(),
    }
