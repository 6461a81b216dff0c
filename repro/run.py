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
from omegaconf.errors import OmegaConfBaseException

from repro.config import RELEASED_LM_ADAPT_STEPS, Config, register_configs, to_config
from repro.tracking import read_json, write_json_atomic
from repro.trainer import Interrupted, StopFlag

log = logging.getLogger("repro.run")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Keys that do not change what a run computes: a finished run with only these different is
# the same run (a relaunched sweep skips it).
NON_RESULT_KEYS = ("logger", "paths", "sweep_name", "name", "dry_run", "cost")
# Model keys that only describe the checkpoint's shape or where/how it runs, not what it computes.
NON_RESULT_MODEL_KEYS = (
    "gradient_checkpointing",
    "fused_gelu",  # the same function as transformers' gelu_new, to ~2e-7
    "device_map",
    "num_layers",
    "num_heads",
    "d_kv",
    "d_ff",
    "vocab_size",
    "trust_remote_code",
)

# Exit code of a run stopped by a preemption signal after checkpointing: sysexits' EX_TEMPFAIL
# ("try again later"). Clusters can requeue on it (slurm.conf RequeueExit=75); see docs/cluster.md.
EXIT_REQUEUE = 75
# SIGTERM: SLURM's preemption / scancel; SIGUSR1: `sbatch --signal=USR1@120` before the time
# limit; SIGUSR2: submitit's default preemption/timeout signal (hydra/launcher=slurm).
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


class RunError(Exception):
    """A problem with the user's input, reported as one line (no traceback)."""


def _steps_label(steps: int) -> str:
    """100000 → "100k"; a count that is not whole thousands stays exact (50 → "50")."""
    return f"{steps // 1000}k" if steps and steps % 1000 == 0 else str(steps)


def own_replaces_release(objective, lm_adapt_steps, lm_adapt_source) -> bool:
    """True where ``lm_adapt_source=own`` loads another backbone than ``auto``: at 100K steps,
    where auto loads the model's ``checkpoints.lm_adapt`` (Google's release) and own loads
    ``repro.lm_adapt``'s ``step_100000/``. At 0 steps (T5.1.1) and at the counts Google never
    released (``step_<N>/`` either way) both choices load the same backbone: the same run."""
    return (
        objective == "lm_adapt"
        and str(lm_adapt_source) == "own"
        and int(lm_adapt_steps) == RELEASED_LM_ADAPT_STEPS
    )


def run_name(
    task, size, objective, lm_adapt_steps, prompt_len, init, seed, lm_adapt_source="auto"
) -> str:
    steps = _steps_label(int(lm_adapt_steps)) if objective == "lm_adapt" else None
    if steps and own_replaces_release(objective, lm_adapt_steps, lm_adapt_source):
        steps += "_own"  # never the directory of a run on the released checkpoint
    objective = f"{objective}{steps}" if steps else objective
    return f"{task}-{size}-{objective}-p{prompt_len}-{init}-s{seed}"


OmegaConf.register_new_resolver("run_name", run_name, replace=True)
register_configs()


# --- what a run loads -------------------------------------------------------------------------


def own_lm_adapt_steps(cfg: Config) -> int | None:
    """The step count of the ``repro.lm_adapt`` checkpoint this run loads
    (``<paths.lm_adapt_dir>/<size>/step_<N>/``), or None: a ``model.path``, no LM adaptation, or
    the model's own ``checkpoints.lm_adapt`` (``lm_adapt_source=auto`` at 100K)."""
    if cfg.model.path or cfg.objective.name != "lm_adapt" or cfg.lm_adapt_steps == 0:
        return None
    if cfg.lm_adapt_source == "own" or cfg.lm_adapt_steps != RELEASED_LM_ADAPT_STEPS:
        return cfg.lm_adapt_steps
    return None


def lm_adapt_command(size: str, steps: int) -> str:
    """The ``repro.lm_adapt`` command that makes ``step_<steps>/`` (the paper's counts at once:
    one run to 100K writes 10K and 50K on the way)."""
    paper = (10_000, 50_000, RELEASED_LM_ADAPT_STEPS)
    listed = ",".join(map(str, paper if steps in paper else (steps,)))
    return f"python -m repro.lm_adapt model={size} lm_adapt.steps=[{listed}]"


def checkpoint_for(cfg: Config) -> str:
    """The backbone to load: a local ``model.path`` wins; else size × objective × LM steps ×
    ``lm_adapt_source`` (own: ``repro.lm_adapt``'s ``step_<N>/``, 100K included)."""
    if cfg.model.path:
        return cfg.model.path
    steps = own_lm_adapt_steps(cfg)
    if steps is not None:
        own = Path(cfg.paths.lm_adapt_dir) / cfg.model.size / f"step_{steps}"
        if not (own / "config.json").exists():
            why = (
                "lm_adapt_source=own loads the suite's own LM adaptation, not Google's release"
                if steps == RELEASED_LM_ADAPT_STEPS
                else f"only {RELEASED_LM_ADAPT_STEPS} was released"
            )
            raise RunError(
                f"no LM-adapted checkpoint for model={cfg.model.size} lm_adapt_steps={steps} "
                f"at {own}; {why} — make it with `{lm_adapt_command(cfg.model.size, steps)}` "
                "or set model.path"
            )
        return str(own)
    objective = cfg.objective.name
    if objective == "lm_adapt" and cfg.lm_adapt_steps == 0:
        objective = "span_corruption"  # 0 LM-adaptation steps = T5.1.1 itself
    if objective not in cfg.model.checkpoints:
        raise RunError(
            f"model={cfg.model.size} names no checkpoint for objective={objective}; "
            f"known: {sorted(cfg.model.checkpoints)}; set model.path to a local checkpoint"
        )
    return cfg.model.checkpoints[objective]


def fingerprint(cfg: Config) -> dict[str, Any]:
    """The parts of the config that decide the result."""
    plain = dataclasses.asdict(cfg)
    for key in NON_RESULT_KEYS:
        plain.pop(key, None)
    if not own_replaces_release(cfg.objective.name, cfg.lm_adapt_steps, cfg.lm_adapt_source):
        # Both choices load the same backbone here; and run dirs made before the key existed
        # (all of them `auto`) keep matching their fingerprint.
        plain.pop("lm_adapt_source", None)
    plain["trainer"].pop("progress", None)
    plain["trainer"].pop("stop_after_steps", None)
    for key in NON_RESULT_MODEL_KEYS:
        plain["model"].pop(key, None)
    return plain


def check_run_dir(run_dir: Path, cfg: Config) -> bool:
    """True if ``run_dir`` already holds this finished run; error if it holds another config."""
    saved = read_json(run_dir / "fingerprint.json")
    if saved is None:
        return False
    mine = fingerprint(cfg)
    if saved != mine:
        diffs = sorted(_diff(saved, mine))
        raise RunError(
            f"{run_dir} already holds a run of a different config (differs in: "
            f"{', '.join(diffs)}); choose another directory with name=... or delete it"
        )
    summary = read_json(run_dir / "summary.json") or read_json(run_dir / "result.json") or {}
    return summary.get("status") == "finished"


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Readers (and a killed writer) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# --- one task ----------------------------------------------------------------------------------


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
    """Train and score one prompt for one task in ``out_dir``; returns its result.json."""
    from repro import objectives
    from repro.data import encode
    from repro.evaluate import evaluate
    from repro.model import PromptedT5, count_parameters
    from repro.prompts import SoftPrompt, init_prompt, label_token_ids
    from repro.tasks import get_task
    from repro.trainer import resolve_device, train

    start = time.time()
    task = get_task(task_name)
    data_dir = cfg.task.data_dir
    train_examples = load_examples(task, task.train_split, data_dir)
    dev_examples = load_examples(task, task.eval_split, data_dir)
    if cfg.task.max_eval_examples:
        dev_examples = dev_examples[: cfg.task.max_eval_examples]
    sentinel = cfg.objective.uses_sentinel
    if sentinel:
        train_examples = objectives.add_sentinel(train_examples, cfg.objective.sentinel_placement)
        dev_inputs = objectives.add_sentinel(dev_examples, cfg.objective.sentinel_placement)
    else:
        dev_inputs = dev_examples
    max_in = cfg.task.max_input_length or task.max_input_length
    limit = target_limit_of(cfg, task, train_examples, dev_examples, tokenizer)
    max_tgt = limit.length
    train_tokens = encode(train_examples, tokenizer, max_in, max_tgt)
    dev_tokens = encode(dev_inputs, tokenizer, max_in, max_tgt)

    table = backbone.get_input_embeddings().weight
    init_kwargs = {"population": cfg.init.population, "low": cfg.init.low, "high": cfg.init.high}
    if cfg.init.name == "class_label":
        init_kwargs["class_token_ids"] = label_token_ids(tokenizer, task.class_words)
    weight = init_prompt(cfg.init.name, table, cfg.prompt_len, seed=cfg.seed, **init_kwargs)
    model = PromptedT5(backbone, SoftPrompt(weight), z_loss=cfg.trainer.z_loss)
    if cfg.model.device_map is None:
        device = resolve_device(cfg.trainer.device)
        model = model.to(device)
    else:  # the backbone was placed by from_pretrained; inputs and prompt go where it starts
        device = backbone.get_input_embeddings().weight.device
        model.prompt.to(device)

    def evaluate_fn() -> dict[str, float]:
        metrics, _ = evaluate(
            model,
            tokenizer,
            task,
            dev_examples,
            dev_tokens.input_ids,
            mode=cfg.task.eval_mode,
            sentinel=sentinel,
            batch_size=cfg.trainer.eval_batch_size,
            max_new_tokens=max_tgt,
            device=device,
        )
        return metrics

    sidecar = {"backbone": checkpoint, "init": cfg.init.name, "task": task.name}
    state = train(
        model,
        train_tokens.input_ids,
        train_tokens.labels,
        evaluate_fn=evaluate_fn,
        score_fn=task.task_score,
        cfg=cfg.trainer,
        out_dir=out_dir,
        seed=cfg.seed,
        pad_id=tokenizer.pad_token_id,
        sink=sink,
        sidecar=sidecar,
        device=device,
        stop=stop,
    )
    return {
        "status": "finished",
        "error": None,
        **cfg.axes,
        "task": task.name,
        "params": cfg.model.params or count_parameters(backbone),
        "checkpoint": checkpoint,
        "best_step": state.best_step,
        "metrics": state.best_metrics,
        "score": state.best_score,
        "steps": state.step,
        "trainable_params": weight.numel(),
        "frozen_params": count_parameters(backbone),
        "n_train": len(train_examples),
        "n_eval": len(dev_examples),
        "truncated": {
            "train_inputs": train_tokens.n_truncated_inputs,
            "train_targets": train_tokens.n_truncated_targets,
            "eval_inputs": dev_tokens.n_truncated_inputs,
        },
        # The target limit (eos included; also the generation cap), where it came from, and how
        # many eval golds are longer than it (0 unless task.max_target_length was set shorter).
        "max_target_length": limit.length,
        "max_target_length_source": limit.source,
        "eval_golds": limit.n_golds,
        "eval_golds_over_target_limit": limit.n_golds_over,
        "train_s": state.train_seconds,
        "wall_s": time.time() - start,
        "versions": versions(),
        "run_dir": str(out_dir),
        "wandb_id": getattr(sink, "run_id", None),
    }


def target_limit_of(cfg: Config, task, train_examples, dev_examples, tokenizer):
    """The task's target limit for this run (:func:`repro.data.target_limit`), warning when eval
    golds do not fit. ``train_examples`` carry the objective's sentinel already, ``dev_examples``
    not: their golds get it here."""
    from repro.data import target_limit
    from repro.objectives import SENTINEL

    prefix = f"{SENTINEL} " if cfg.objective.uses_sentinel else ""
    golds = [prefix + gold for ex in dev_examples for gold in ex.meta.get("answers", (ex.targets,))]
    limit = target_limit(
        [ex.targets for ex in train_examples],
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
        **axes,
        "task": task_name,
        "run_dir": str(out_dir),
        "versions": versions(),
    }


# --- one job -----------------------------------------------------------------------------------


def run_experiment(
    cfg: Config,
    run_dir: Path,
    *,
    choices: dict[str, str] | None = None,
    stop: StopFlag | None = None,
) -> dict:
    """Run every task of one job in ``run_dir``; returns the job summary.

    Status "interrupted" (no result.json written) when ``stop`` was set or the session's step
    budget ran out: launching the same job again resumes it.
    """
    from transformers import AutoTokenizer

    from repro.model import load_backbone, set_dropout
    from repro.tasks import task_names
    from repro.tracking import ScopedSink, build_sink

    run_dir.mkdir(parents=True, exist_ok=True)
    if check_run_dir(run_dir, cfg):
        log.info("%s already holds this finished run: skipped", run_dir)
        return read_json(run_dir / "summary.json") or read_json(run_dir / "result.json")
    names = task_names(cfg.task.name)
    checkpoint = checkpoint_for(cfg)
    prepare_assets(cfg, names)

    trust = cfg.model.trust_remote_code
    # The backbone first: its errors name the checkpoint and say what is wrong with it.
    backbone = load_backbone(
        checkpoint,
        dtype=cfg.model.dtype,
        attn_implementation=cfg.model.attn_implementation,
        device_map=cfg.model.device_map,
        trust_remote_code=trust,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        fused_gelu=cfg.model.fused_gelu,
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=trust)
    except (OSError, ValueError) as err:
        raise RunError(f"cannot load a tokenizer from {checkpoint!r}: {_first_line(err)}") from None
    # Claimed only once the job can start: a job that failed to load leaves no fingerprint, so
    # running it again with the mistake fixed (say, model.path) is not refused.
    write_json_atomic(run_dir / "fingerprint.json", fingerprint(cfg))
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    set_dropout(backbone, cfg.model.dropout)
    tags = [f"{k}={v}" for k, v in cfg.axes.items() if v is not None and k != "params"]
    sink = build_sink(
        cfg.logger,
        name=cfg.name,
        group=cfg.sweep_name,
        config={**cfg.axes, "config": dataclasses.asdict(cfg), "choices": choices or {}},
        run_dir=run_dir,
        tags=tags,
    )
    results, interrupted = {}, None
    for name in names:
        out_dir = run_dir if len(names) == 1 else run_dir / name
        out_dir.mkdir(parents=True, exist_ok=True)
        done = read_json(out_dir / "result.json")
        if done and done.get("status") == "finished":
            results[name] = done
            continue
        if stop is not None and stop.reason:  # a signal came between tasks: start no new one
            interrupted = f"stopped before task {name} ({stop.reason}); run again to resume"
            break
        try:
            task_sink = sink if len(names) == 1 else ScopedSink(sink, name)
            result = train_task(
                cfg, name, backbone, tokenizer, checkpoint, out_dir, task_sink, stop
            )
        except Interrupted as err:  # state is in last/; no result.json until the run ends
            log.warning("task %s: %s", name, err)
            interrupted = str(err)
            break
        except Exception as err:  # one task failing must not stop the others
            log.error("task %s failed: %s", name, err)
            (out_dir / "error.txt").write_text(traceback.format_exc())
            result = failed_result(cfg, name, out_dir, err)
        write_json_atomic(out_dir / "result.json", result)
        results[name] = result
    if interrupted:
        sink.finish(failed=False)
        return {"status": "interrupted", "error": interrupted, **cfg.axes, "run_dir": str(run_dir)}
    summary = summarise(cfg, results, run_dir)
    if len(names) > 1:
        write_json_atomic(run_dir / "summary.json", summary)
    # A multi-task job is one W&B run: its summary carries every task's result, so that
    # `collect --wandb` gives the same rows per task as the local run directories.
    sink.summary({**summary, "results": results} if len(names) > 1 else results[names[0]])
    sink.finish(failed=summary["status"] != "finished")
    return summary


def summarise(cfg: Config, results: dict[str, dict], run_dir: Path) -> dict[str, Any]:
    from repro.metrics import superglue_score
    from repro.tasks import SUPERGLUE

    status = "finished" if all(r["status"] == "finished" for r in results.values()) else "failed"
    scores = {name: r.get("score") for name, r in results.items()}
    summary = {"status": status, **cfg.axes, "scores": scores, "run_dir": str(run_dir)}
    if status != "finished":
        summary["errors"] = {name: r.get("error") for name, r in results.items() if r.get("error")}
    if set(results) == set(SUPERGLUE) and status == "finished":
        summary["superglue_score"] = superglue_score(scores)
    return summary


def prepare_assets(cfg: Config, names) -> None:
    """Build what the smoke/toy setting makes itself: the tiny model, the toy data."""
    from repro.tasks.toy import GENERATORS, write_toy_data
    from repro.tiny import ensure_tiny_t5

    if cfg.model.build_tiny and cfg.model.path:
        ensure_tiny_t5(cfg.model.path)
    for name in names:
        if name in GENERATORS and cfg.task.data_dir:
            data_dir = Path(cfg.task.data_dir)
            if not (data_dir / "validation.jsonl").exists():
                write_toy_data(name, data_dir)


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

    def forward(self) -> None:
        """Call the handler ours replaced for the received signal (e.g. submitit's requeue)."""
        previous = self.previous.get(self.signum)
        if callable(previous):
            previous(self.signum, None)


@contextlib.contextmanager
def preemption_signals(stop: StopFlag) -> Iterator[PreemptionHandler]:
    """While inside, SIGTERM/SIGUSR1/SIGUSR2 set ``stop`` instead of killing the process."""
    handler = PreemptionHandler(stop)
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signal handlers can only be installed from the main thread
        return
    for name in PREEMPTION_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            handler.previous[signum] = signal.signal(signum, handler)
    try:
        yield handler
    finally:
        for signum, previous in handler.previous.items():
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


# What a user can get wrong: reported as one line, no traceback. Anything else is a bug.
USER_ERRORS = (RunError, ValueError, KeyError, OSError, OmegaConfBaseException)
USER_ERROR_NAMES = {
    "RunError",
    "ValueError",
    "KeyError",
    "OSError",
    "FileNotFoundError",
    "NotADirectoryError",
    "PermissionError",
}


def cli_error_message(err: BaseException) -> str | None:
    """One line for a user's mistake (bad override, value, path, ...); None for anything else."""
    from hydra.errors import HydraException, MissingConfigException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = sorted(o for o in (err.options or []) if o != "schema")
        if group and options:
            return f"{group}={option!r} is not allowed; choose one of: {', '.join(options)}"
    if not isinstance(err, (HydraException, *USER_ERRORS)):
        return None
    from hydra.errors import OverrideParseException

    first = _first_line(err)
    if isinstance(err, OverrideParseException):
        return f"cannot parse the overrides: {first}"
    cause = err.__cause__ or err.__context__
    if isinstance(err, HydraException) and cause is not None and _first_line(cause) not in first:
        first = f"{first.rstrip('.')}: {_first_line(cause)}"
    return first


def _first_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[0] if lines else type(err).__name__


# An absolute path: the same conf/ whether run as ``python -m repro.run`` or called in-process.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    cfg = None
    stop = StopFlag()
    try:
        cfg = to_config(dcfg)
        if cfg.dry_run:  # the estimate only: nothing is loaded, nothing is written
            from repro.cost import describe, estimate

            print(describe(estimate(cfg)))
            return None
        if multirun:
            spread_over_local_gpus(cfg, hydra_cfg.job.get("num"))
        with preemption_signals(stop) as preemption:
            summary = run_experiment(
                cfg, run_dir, choices=dict(hydra_cfg.runtime.choices), stop=stop
            )
            if preemption.signum is not None and summary["status"] == "interrupted":
                # last/ is on disk: let the launcher requeue (submitit), else exit so SLURM can
                print(f"{run_dir}: {summary['error']}", file=sys.stderr)
                preemption.forward()
                sys.exit(EXIT_REQUEUE)
            if (
                preemption.signum is not None
                and multirun
                and not os.environ.get("SUBMITIT_EXECUTOR")
            ):
                # The signal came as this job ended: stop the in-process sweep before the next
                # job starts (under submitit every job is its own process and this one is done).
                print(f"{run_dir}: {summary['status']}; {preemption.stop.reason}: sweep stopped")
                sys.exit(EXIT_REQUEUE)
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        if multirun:  # the other jobs of the sweep go on; a dir holding a run is never touched
            if not any((run_dir / f).exists() for f in ("result.json", "fingerprint.json")):
                task = OmegaConf.select(dcfg, "task.name", default="?")
                write_json_atomic(run_dir / "result.json", failed_result(cfg, task, run_dir, err))
            return None
        sys.exit(2)
    print(f"{run_dir}: {summary['status']}  scores={summary.get('scores')}")
    if summary["status"] == "interrupted":
        print(f"{run_dir}: {summary['error']}", file=sys.stderr)
    elif summary["status"] != "finished" and not multirun:
        errors = [e for e in (summary.get("errors") or {}).values() if e]
        for error in errors:  # "ValueError: task 'rte': ..." → "error: task 'rte': ..."
            print(f"error: {error.partition(': ')[2] or error}", file=sys.stderr)
        user = errors and all(e.split(":")[0] in USER_ERROR_NAMES for e in errors)
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
