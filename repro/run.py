"""The only Hydra entry: ``python -m repro.run [overrides]`` (``-m`` for a sweep).

One job = one run directory = one prompt per task (``task=superglue`` trains the 8 SuperGLUE
prompts one after the other in ``<run_dir>/<task>/``). The flow:

    config ─► checkpoint ─► frozen backbone + tokenizer ─► per task: examples → tokens →
    prompt init → train (eval every N, keep best) → result.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from repro import files, rundir
from repro.checkpoints import checkpoint_for
from repro.cli import USER_ERRORS, RunError, cli_error_message
from repro.config import CONF_DIR, Config, register_configs
from repro.files import read_json, write_json_atomic
from repro.methods import check_method_overrides, check_tasks, get_method
from repro.resolve import load_config
from repro.rundir import fingerprint, run_name  # noqa: F401
from repro.trainer import Interrupted, StopFlag

log = logging.getLogger("repro.run")

# Exit code of a run stopped by a preemption signal after checkpointing: sysexits' EX_TEMPFAIL
# ("try again later"). Clusters can requeue on it (slurm.conf RequeueExit=75); see docs/cluster.md.
EXIT_REQUEUE = 75
# SIGTERM: SLURM's preemption / scancel; SIGUSR1: `sbatch --signal=USR1@120` before the time
# limit; SIGUSR2: submitit's default preemption/timeout signal (hydra/launcher=slurm).
# SIGINT (Ctrl-C) does what they do — checkpoint, one line, resumable — but exits 130 (128 + 2,
# the shell's code for an interrupt) and is not handed on; a second Ctrl-C aborts at once.
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
EXIT_INTERRUPT = 130


register_configs()


# --- what a run loads -------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# --- one task ----------------------------------------------------------------------------------


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


def prepare_task(cfg: Config, task_name: str, tokenizer, *, name_prefix: bool = False) -> TaskData:
    """Load, (sentinel-)prefix and tokenise one task's train and dev examples.

    Args:
        name_prefix: put the task's name in front of every input (``"rte hypothesis: ..."``):
            multi-task model tuning, where one model must tell the tasks apart (the paper's §3.1:
            "a text prefix indicating the task name").
    """
    from repro import objectives
    from repro.data import encode
    from repro.tasks import get_task
    from repro.tasks.base import data_dir_for

    task = get_task(task_name)
    data_dir = data_dir_for(task, cfg.task.data_dir, cfg.paths.cache_dir)
    # trainer.steps=0 only scores the initial prompt: no training data are read
    train_examples = load_examples(task, task.train_split, data_dir) if cfg.trainer.steps else []
    dev_examples = load_examples(task, task.eval_split, data_dir)
    if cfg.task.max_eval_examples:
        dev_examples = dev_examples[: cfg.task.max_eval_examples]
    if name_prefix:
        train_examples = [
            dataclasses.replace(e, inputs=f"{task.name} {e.inputs}") for e in train_examples
        ]
        dev_examples = [
            dataclasses.replace(e, inputs=f"{task.name} {e.inputs}") for e in dev_examples
        ]
    sentinel = cfg.objective.uses_sentinel
    if sentinel:
        train_examples = objectives.add_sentinel(train_examples, cfg.objective.sentinel_placement)
        dev_inputs = objectives.add_sentinel(dev_examples, cfg.objective.sentinel_placement)
    else:
        dev_inputs = dev_examples
    max_in = cfg.task.max_input_length or task.max_input_length
    limit = target_limit_of(cfg, task, train_examples, dev_examples, tokenizer)
    train_tokens = encode(train_examples, tokenizer, max_in, limit.length)
    dev_tokens = encode(dev_inputs, tokenizer, max_in, limit.length)
    return TaskData(task, train_examples, dev_examples, train_tokens, dev_tokens, limit, sentinel)


def build_model(cfg: Config, backbone, tokenizer, task):
    """The method's model (``repro.methods``): a prompt in front of the frozen backbone
    (initialised as ``cfg.init`` says, from the task's class labels), or the backbone itself,
    every weight trainable."""
    from repro.model import LoraT5, PromptedT5, TunedT5
    from repro.prompts import SoftPrompt

    if get_method(cfg.method.name).trains == "lora":
        m = cfg.method
        return LoraT5(
            backbone,
            r=m.r,
            alpha=m.alpha,
            dropout=m.dropout,
            target_modules=m.target_modules,
            z_loss=cfg.trainer.z_loss,
            seed=cfg.seed,
        )
    if get_method(cfg.method.name).trains == "backbone":
        model = TunedT5(backbone, z_loss=cfg.trainer.z_loss)
        model.tokenizer = tokenizer  # saved into best/ and last/: a loadable checkpoint
        return model
    weight = initial_prompt(cfg, task, backbone, tokenizer)
    return PromptedT5(backbone, SoftPrompt(weight), z_loss=cfg.trainer.z_loss)


def initial_prompt(cfg: Config, task, backbone, tokenizer):
    """The run's initial prompt [P, H] (``cfg.init`` from ``cfg.seed``)."""
    from repro.prompts import init_prompt, label_token_ids, text_token_ids

    table = backbone.get_input_embeddings().weight
    init_kwargs = {"population": cfg.init.population, "low": cfg.init.low, "high": cfg.init.high}
    if cfg.init.name == "class_label":
        init_kwargs["class_token_ids"] = label_token_ids(tokenizer, task.class_words)
    elif cfg.init.name == "text":
        init_kwargs["text_ids"] = text_token_ids(tokenizer, cfg.init.text, cfg.init.text_rule)
        init_kwargs["text_rule"] = cfg.init.text_rule
    elif cfg.init.name == "from_file":
        init_kwargs["prompt"] = init_file_prompt(cfg, table.shape[1])
    return init_prompt(cfg.init.name, table, cfg.prompt_len, seed=cfg.seed, **init_kwargs)


def place(cfg: Config, model, backbone):
    """Move ``model`` to the run's device; returns the device inputs go to."""
    from repro.trainer import resolve_device

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
    from repro.evaluate import evaluate

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
    **extra,
) -> dict[str, Any]:
    """One task's result.json (``metrics``/``score``: the best checkpoint's on dev)."""
    from repro.backbone import count_parameters

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
        "wall_s": time.time() - start,
        "versions": versions(),
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
    from repro.trainer import train

    start = time.time()
    data = prepare_task(cfg, task_name, tokenizer)
    model = build_model(cfg, backbone, tokenizer, data.task)
    device = place(cfg, model, backbone)
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
    )
    return task_result(cfg, data, model, backbone, checkpoint, state, out_dir, sink, start)


def save_initial_prompt(out_dir: Path, weight, sidecar) -> None:
    """``<out_dir>/init/``: the untrained prompt, repro.interpret's baseline (written once)."""
    from repro.prompts import save_prompt

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
    ``<task>/score``); early stopping keeps the step with the best mean task score (the
    SuperGLUE score for task=superglue).
    """
    from repro.trainer import train

    start = time.time()
    datas = [prepare_task(cfg, name, tokenizer, name_prefix=True) for name in names]
    model = build_model(cfg, backbone, tokenizer, datas[0].task)
    device = place(cfg, model, backbone)

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
    )
    results = {}
    for data in datas:
        name = data.task.name
        own = {
            k.split("/", 1)[1]: v
            for k, v in state.best_metrics.items()
            if k.startswith(f"{name}/") and k != f"{name}/score"
        }
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
            mixture=list(names),
            model_dir=str(run_dir),  # best/ and last/ of the one model live there
        )
        results[name] = {**result, "metrics": own, "score": state.best_metrics.get(f"{name}/score")}
    return results


def init_file_prompt(cfg: Config, d_model: int):
    """The prompt ``init.path`` holds, refused in one line unless it is [prompt_len, d_model]."""
    from repro.interop import fit_prompt, read_prompt

    prompt, _ = read_prompt(cfg.init.path)
    return fit_prompt(prompt, cfg.prompt_len, d_model, f"init.path={cfg.init.path}")


def target_limit_of(cfg: Config, task, train_examples, dev_examples, tokenizer):
    """The task's target limit for this run (:func:`repro.data.target_limit`), warning when eval
    golds do not fit. ``train_examples`` carry the objective's sentinel already, ``dev_examples``
    not: their golds get it here. Without training examples (``trainer.steps=0``) the task's
    label strings stand for the training targets, so a label task gets a trained run's limit."""
    from repro.data import target_limit
    from repro.objectives import SENTINEL

    prefix = f"{SENTINEL} " if cfg.objective.uses_sentinel else ""
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


# --- one job -----------------------------------------------------------------------------------


def log_memory_plan(cfg: Config) -> None:
    """Log the job's micro-batches and memory estimate as it starts, and warn (with the switches
    that would make it fit) if the estimate exceeds ``cost.gpu_memory_gb``
    (:func:`repro.memory.start_lines`)."""
    from repro.memory import start_lines

    info, warning = start_lines(cfg)
    if info:
        log.info(info)
    if warning:
        log.warning(warning)


def run_experiment(
    cfg: Config,
    run_dir: Path,
    *,
    choices: dict[str, str] | None = None,
    stop: StopFlag | None = None,
    hydra_files: dict[str, str] | None = None,
) -> dict:
    """Run every task of one job in ``run_dir``; returns the job summary.

    The directory's rules — lock, identity, claim, resume, atomic writes — are
    :mod:`repro.rundir`'s. Status "interrupted" (no result.json written) when ``stop`` was set
    or the session's step budget ran out: launching the same job again resumes it. A finished
    run is not run again (``"skipped": True`` in the returned summary).

    Args:
        hydra_files: Hydra's record of the command (``config.yaml``, ``hydra.yaml``,
            ``overrides.yaml``), written to ``.hydra/`` when the job claims the directory.
    """
    from repro.tasks import MIXTURES, task_names
    from repro.trainer import resolve_device

    names = task_names(cfg.task.name)
    check_tasks(cfg.method.name, cfg.task.name, names, MIXTURES)
    checkpoint = checkpoint_for(cfg)
    if cfg.model.device_map is None:
        resolve_device(cfg.trainer.device)  # a device this machine lacks: refused before loading
    prepare_assets(cfg, names)  # generated assets go to the cache, never into a given dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.locked(run_dir):
        mine = rundir.fingerprint(cfg, names)
        if rundir.status_of(run_dir, mine) == "finished":
            log.info("%s already holds this finished run: skipped", run_dir)
            done = read_json(run_dir / rundir.SUMMARY) or read_json(run_dir / rundir.RESULT)
            return {**done, "skipped": True}
        log_memory_plan(cfg)  # once the directory is ours (a refused job writes nothing there)
        summary = _run_tasks(cfg, names, checkpoint, run_dir, mine, choices, stop, hydra_files)
        if summary["status"] == "failed" and rundir.release_if_unstarted(run_dir):
            log.info("%s: no task took a training step; the directory is not claimed", run_dir)
        return summary


def load_model(cfg: Config, checkpoint: str):
    """(tokenizer, backbone with the configured dropout) of a job."""
    from repro.backbone import checkpoint_config, load_backbone, load_tokenizer, set_dropout

    # Cheap checks first (config, files, tokenizer: seconds), then the weights (minutes for
    # XXL): each refuses a checkpoint it cannot use with one line naming it.
    config, _, _ = checkpoint_config(checkpoint, cfg.model.trust_remote_code)
    if cfg.init.name == "from_file" and getattr(config, "d_model", None):
        init_file_prompt(cfg, config.d_model)  # another width: refused before the weights load
    tokenizer = load_tokenizer(checkpoint, trust_remote_code=cfg.model.trust_remote_code)
    backbone = load_backbone(
        checkpoint,
        dtype=cfg.model.dtype,
        attn_implementation=cfg.model.attn_implementation,
        device_map=cfg.model.device_map,
        trust_remote_code=cfg.model.trust_remote_code,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        fused_gelu=cfg.model.fused_gelu,
    )
    set_dropout(backbone, cfg.model.dropout)
    return tokenizer, backbone


def open_sink(cfg: Config, run_dir: Path, choices: dict[str, str] | None):
    """The job's tracking sink (W&B run or the null sink)."""
    from repro.tracking import build_sink

    tags = [f"{k}={v}" for k, v in cfg.axes.items() if v is not None and k != "params"]
    return build_sink(
        cfg.logger,
        name=cfg.name,
        group=cfg.sweep_name,
        config={**cfg.axes, "config": dataclasses.asdict(cfg), "choices": choices or {}},
        run_dir=run_dir,
        tags=tags,
    )


def task_dir(run_dir: Path, names, name: str) -> Path:
    """Where one task of a job trains: the run dir, or ``<run_dir>/<task>`` for several."""
    return run_dir if len(names) == 1 else run_dir / name


def _run_tasks(cfg, names, checkpoint, run_dir, fp, choices, stop, hydra_files) -> dict:
    tokenizer, backbone = load_model(cfg, checkpoint)
    sink = open_sink(cfg, run_dir, choices)
    # Claimed only once the job can start: a job that failed to load (or to start its W&B run)
    # leaves no fingerprint, so running it again with the mistake fixed is not refused.
    rundir.claim(run_dir, fp, OmegaConf.to_yaml(OmegaConf.structured(cfg)), hydra_files)
    if get_method(cfg.method.name).mixture:
        results, interrupted = _run_mixture(
            cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop
        )
    else:
        results, interrupted = _run_each(
            cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop
        )
    return finish_job(cfg, names, results, interrupted, run_dir, sink)


def task_failed(cfg: Config, name: str, out_dir: Path, err: BaseException) -> dict:
    """Record a task's failure (``error.txt`` with the traceback); returns its result."""
    files.write_text_atomic(out_dir / rundir.ERROR, traceback.format_exc())
    return failed_result(cfg, name, out_dir, err)


def finish_job(cfg: Config, names, results, interrupted: str | None, run_dir: Path, sink) -> dict:
    """The job's summary (``summary.json`` for several tasks) and the end of its W&B run."""
    if interrupted:
        sink.finish(failed=False)
        return {"status": "interrupted", "error": interrupted, **cfg.axes, "run_dir": str(run_dir)}
    summary = summarise(cfg, results, run_dir)
    if len(names) > 1:
        write_json_atomic(run_dir / rundir.SUMMARY, summary)
        if summary["status"] == "finished":
            rundir.clear_error(run_dir)
    # A multi-task job is one W&B run: its summary carries every task's result, so that
    # `collect --wandb` gives the same rows per task as the local run directories.
    sink.summary({**summary, "results": results} if len(names) > 1 else results[names[0]])
    sink.finish(failed=summary["status"] != "finished")
    return summary


def _run_each(cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop):
    """The job's tasks one after the other, each in its own directory (``run_dir`` itself for
    a single task); returns ({task: result}, why it stopped early or None)."""
    from repro.tracking import ScopedSink

    # Model tuning changes the backbone: every task starts from the loaded weights again.
    pristine = None
    if get_method(cfg.method.name).trains == "backbone" and len(names) > 1:
        pristine = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    results, interrupted = {}, None
    for name in names:
        out_dir = task_dir(run_dir, names, name)
        out_dir.mkdir(parents=True, exist_ok=True)
        done = read_json(out_dir / rundir.RESULT)
        if done and done.get("status") == "finished":
            results[name] = done
            continue
        if stop is not None and stop.reason:  # a signal came between tasks: start no new one
            interrupted = f"stopped before task {name} ({stop.reason}); run again to resume"
            break
        try:
            task_sink = sink if len(names) == 1 else ScopedSink(sink, name)
            if pristine is not None:
                backbone.load_state_dict(pristine)
            result = train_task(
                cfg, name, backbone, tokenizer, checkpoint, out_dir, task_sink, stop
            )
            rundir.clear_error(out_dir)
        except Interrupted as err:  # state is in last/; no result.json until the run ends
            log.warning("task %s: %s", name, err)
            interrupted = str(err)
            break
        except Exception as err:  # one task failing must not stop the others
            log.error("task %s failed: %s", name, err)
            result = task_failed(cfg, name, out_dir, err)
        write_json_atomic(out_dir / rundir.RESULT, result)
        results[name] = result
    return results, interrupted


def _run_mixture(cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop):
    """The job's tasks as one mixture (``train_mixture``): one model in ``run_dir``, then a
    result.json per task in ``run_dir/<task>/``; returns ({task: result}, why it stopped early
    or None)."""
    done = {name: read_json(run_dir / name / rundir.RESULT) for name in names}
    if all(r and r.get("status") == "finished" for r in done.values()):
        return done, None
    if stop is not None and stop.reason:
        return {}, f"stopped before the mixture ({stop.reason}); run again to resume"
    try:
        results = train_mixture(cfg, names, backbone, tokenizer, checkpoint, run_dir, sink, stop)
        rundir.clear_error(run_dir)
    except Interrupted as err:  # state is in last/; no result.json until the run ends
        log.warning("mixture %s: %s", cfg.task.name, err)
        return {}, str(err)
    except Exception as err:  # every task of the mixture failed with it
        log.error("mixture %s failed: %s", cfg.task.name, err)
        files.write_text_atomic(run_dir / rundir.ERROR, traceback.format_exc())
        results = {name: failed_result(cfg, name, run_dir / name, err) for name in names}
    for name, result in results.items():
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / name / rundir.RESULT, result)
    return results, None


def summarise(cfg: Config, results: dict[str, dict], run_dir: Path) -> dict[str, Any]:
    from repro.tasks import SUPERGLUE, superglue_score

    status = "finished" if all(r["status"] == "finished" for r in results.values()) else "failed"
    scores = {name: r.get("score") for name, r in results.items()}
    summary = {"status": status, **cfg.axes, "scores": scores, "run_dir": str(run_dir)}
    if status != "finished":
        summary["errors"] = {name: r.get("error") for name, r in results.items() if r.get("error")}
        summary["user_error"] = all(r.get("user_error") for r in results.values() if r.get("error"))
    if set(results) == set(SUPERGLUE) and status == "finished":
        summary["superglue_score"] = superglue_score(scores)
    return summary


def prepare_assets(cfg: Config, names) -> None:
    """Build what the smoke/toy setting makes itself, in the cache only: the tiny model (at its
    default place, never at a path the user gave) and generated task data (never into a given
    ``task.data_dir``)."""
    from repro.tasks import get_task
    from repro.tasks.base import data_dir_for, ensure_generated
    from repro.tiny import ensure_tiny_t5

    if cfg.model.build_tiny and cfg.model.path:
        default = Path(cfg.paths.cache_dir).expanduser() / "tiny-t5"
        path = Path(cfg.model.path).expanduser()
        if path.resolve() == default.resolve():
            ensure_tiny_t5(path)
        elif not (path / "config.json").exists():
            raise RunError(
                f"model.path={cfg.model.path} holds no checkpoint (no config.json); the tiny "
                f"model is only built at its default place {default} (leave model.path unset)"
            )
    for name in names:
        task = get_task(name)
        if task.generate is not None and not cfg.task.data_dir:
            ensure_generated(task, data_dir_for(task, None, cfg.paths.cache_dir))


# --- preemption ------------------------------------------------------------------------------


class PreemptionHandler:
    """Turns a preemption signal into a set ``StopFlag``: the loop checkpoints ``last/`` and stops.

    The signal handler itself only sets the flag (no I/O inside a handler); the training loop
    sees it after the current step. ``forward`` then hands the signal to whatever handler was
    installed before ours — under hydra-submitit-launcher that is submitit's, which requeues the
    job — once our checkpoint is on disk.
    """

    def __init__(self, stop: StopFlag):
        self.stop = stop
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            self.stop.set(f"received {signal.Signals(signum).name}")
        elif signum == signal.SIGINT:  # Ctrl-C twice: stop now, without a checkpoint
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, else 75 (requeue)."""
        return EXIT_INTERRUPT if self.signum == signal.SIGINT else EXIT_REQUEUE

    def forward(self) -> None:
        """Call the handler ours replaced for the received signal (e.g. submitit's requeue);
        never for Ctrl-C, whose default handler would raise KeyboardInterrupt."""
        previous = self.previous.get(self.signum)
        if callable(previous) and self.signum != signal.SIGINT:
            previous(self.signum, None)


@contextlib.contextmanager
def preemption_signals(stop: StopFlag) -> Iterator[PreemptionHandler]:
    """While inside, SIGTERM/SIGUSR1/SIGUSR2/SIGINT set ``stop`` instead of killing the process.

    Left by ``sys.exit`` after a signal (exit 75: the checkpoint is on disk), the process is
    leaving: SIGTERM/SIGUSR1/SIGUSR2 are then ignored rather than given back their default
    (death by signal), so a repeated one during Hydra's unwinding or the interpreter's shutdown
    (which resets Python handlers to the default, not ignored signals) cannot turn exit 75 into
    a kill that no requeue rule matches. A second Ctrl-C still aborts.
    """
    handler = PreemptionHandler(stop)
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signal handlers can only be installed from the main thread
        return
    for name in PREEMPTION_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            handler.previous[signum] = signal.signal(signum, handler)
    leaving = False
    try:
        yield handler
    except SystemExit:
        leaving = handler.signum is not None
        raise
    finally:
        for signum, previous in handler.previous.items():
            if leaving:
                previous = handler if signum == signal.SIGINT else signal.SIG_IGN
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def spread_over_local_gpus(cfg: Config, job_num: int | None) -> None:
    """Under ``hydra/launcher=local`` every job sees all N GPUs: job i takes GPU i mod N, so a
    batch of N jobs (``hydra.sweeper.max_batch_size=N``) fills the box, one job per GPU."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or job_num is None:
        return
    if cfg.trainer.device != "auto" or cfg.model.device_map is not None:
        return  # the user placed the job
    import torch

    count = torch.cuda.device_count()
    if count > 1:
        torch.cuda.set_device(int(job_num) % count)


# --- the Hydra entry --------------------------------------------------------------------------


def hydra_record(dcfg: DictConfig, hydra_cfg) -> dict[str, str]:
    """What Hydra itself would write to ``.hydra/`` (``hydra.output_subdir`` is off in
    conf/config.yaml, so that a refused relaunch rewrites nothing): written when the job claims
    its directory (:func:`repro.rundir.claim`)."""
    return {
        "config.yaml": OmegaConf.to_yaml(dcfg),
        "hydra.yaml": OmegaConf.to_yaml({"hydra": OmegaConf.to_container(hydra_cfg)}),
        "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task)),
    }


# An absolute path: the same conf/ whether run as ``python -m repro.run`` or called in-process.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    cfg = None
    stop = StopFlag()
    try:
        cfg = load_config(dcfg)
        check_method_overrides(cfg.method.name, hydra_cfg.overrides.task)
        if cfg.dry_run:  # the estimate only: nothing is loaded, nothing is written
            from repro.cost.report import describe
            from repro.estimate import estimate
            from repro.pack import describe_fit

            print(describe(estimate(cfg)))
            print(describe_fit(cfg))
            return None
        if multirun:
            spread_over_local_gpus(cfg, hydra_cfg.job.get("num"))
        with preemption_signals(stop) as preemption:
            summary = run_experiment(
                cfg,
                run_dir,
                choices=dict(hydra_cfg.runtime.choices),
                stop=stop,
                hydra_files=hydra_record(dcfg, hydra_cfg),
            )
            if preemption.signum is not None and summary["status"] == "interrupted":
                # last/ is on disk: let the launcher requeue (submitit), else exit so SLURM can
                print(f"{run_dir}: {summary['error']}", file=sys.stderr)
                preemption.forward()
                sys.exit(preemption.exit_code)
            if (
                preemption.signum is not None
                and multirun
                and not os.environ.get("SUBMITIT_EXECUTOR")
            ):
                # The signal came as this job ended: stop the in-process sweep before the next
                # job starts (under submitit every job is its own process and this one is done).
                print(f"{run_dir}: {summary['status']}; {preemption.stop.reason}: sweep stopped")
                sys.exit(preemption.exit_code)
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        if multirun:  # the other jobs of the sweep go on; a dir holding a run is never touched
            mine = not isinstance(err, rundir.RunDirError)  # (in use, or another config's)
            if mine and not any(
                (run_dir / f).exists() for f in ("result.json", "fingerprint.json")
            ):
                task = OmegaConf.select(dcfg, "task.name", default="?")
                result = failed_result(cfg, task, run_dir, err)
                if cfg is None:  # rejected by load_config: keep the axes the command gave
                    from repro.sweep import job_axes

                    result.update(job_axes(dcfg))
                write_json_atomic(run_dir / "result.json", result)
            return None
        sys.exit(2)
    scores = summary.get("scores") or {summary.get("task"): summary.get("score")}
    skipped = " (already finished: skipped)" if summary.get("skipped") else ""
    print(f"{run_dir}: {summary['status']}{skipped}  scores={scores}")
    if summary["status"] == "interrupted":
        print(f"{run_dir}: {summary['error']}", file=sys.stderr)
    elif summary["status"] != "finished" and not multirun:
        errors = [e for e in (summary.get("errors") or {}).values() if e]
        for error in errors:  # "ValueError: task 'rte': ..." → "error: task 'rte': ..."
            print(f"error: {error.partition(': ')[2] or error}", file=sys.stderr)
        user = errors and summary.get("user_error")
        sys.exit(2 if user else 1)  # 2: fix the input; 1: the run itself failed
    return summary.get("superglue_score")


def cli() -> None:
    """``python -m repro.run``: Hydra's entry, with Hydra's own errors (unknown option, bad
    override) reported like ours: one ``error:`` line, exit code 2, no traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for full tracebacks
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; we format
    try:
        main()
    except Exception as err:
        message = cli_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    cli()
