"""A finished run, read back: its config, its task, its backbone and what it learned (``best/``).

The later-use commands — prompt ensembling (``repro.ensemble``), zero-shot transfer
(``repro.transfer``) and what prompts mean (``repro.interpret``) — never retrain; they start
from a run directory through :func:`read_run` and, to score, :func:`load_scorer`. A run of a
``task=superglue`` job is one of its task sub-directories (``<job>/<task>/``); its config is the
job's ``config.yaml``.

:func:`load_scorer` is the one place a run's best weights become a model that predicts: a prompt
run gives the frozen backbone with its best prompt in front (:class:`repro.model.PromptedT5`).
A method that saves other weights in ``best/`` (model tuning saves the whole model) adds its
loader to :data:`SCORERS` under its ``method`` name, and every later-use command takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import Tensor

from repro.backbone import load_backbone, load_tokenizer
from repro.causal import LoraCausalLM, PromptedCausalLM, TunedCausalLM
from repro.checkpoints import checkpoint_for
from repro.cli import RunError
from repro.config import Config
from repro.data import _tokenize
from repro.family import CAUSAL, encode_for, family_of
from repro.files import read_json
from repro.lora import without_lora
from repro.model import LoraT5, PromptedT5, TunedT5
from repro.objectives import SENTINEL, add_sentinel
from repro.prompts import PromptFileError, SoftPrompt, load_prompt
from repro.resolve import load_config
from repro.rundir import CONFIG, RESULT
from repro.tasks import Task, get_task, task_names
from repro.tasks.base import data_dir_for, ensure_generated

BEST = "best"
INIT = "init"  # the prompt as initialised, saved before the first step (repro.run)
# Directories inside a run that never hold a run of their own.
_NOT_RUNS = {"best", "last", "init", "transfer", ".hydra", "wandb", "__pycache__", ".git"}


class RunReadError(RunError):
    """A run directory that cannot be used as a trained run (no best/, no config): one line."""


@dataclass(frozen=True)
class TrainedRun:
    """One trained task run as it lies on disk.

    Attributes:
        run_dir: The directory holding ``best/`` (a job's dir, or ``<job>/<task>/``).
        cfg: The job's resolved config (its ``task.name`` is the job's; see ``task``).
        task: The task this run was trained on.
        result: Its ``result.json`` (score, metrics, checkpoint, ...).
        checkpoint: The backbone it was trained on (hub id or directory).
        method: ``prompt`` (a soft prompt on a frozen backbone) or another method's name.
    """

    run_dir: Path
    cfg: Config
    task: Task
    result: dict[str, Any]
    checkpoint: str
    method: str

    @property
    def best_dir(self) -> Path:
        return self.run_dir / BEST

    @property
    def score(self) -> float | None:
        return self.result.get("score")

    def best_prompt(self) -> Tensor:
        """The best prompt [P, H] (prompt runs only)."""
        self._require_prompt("its best prompt")
        try:
            return load_prompt(self.best_dir)[0]
        except PromptFileError as err:  # torn or foreign: the prompt the run kept is lost
            raise RunReadError(
                f"{err}; the run's best prompt is lost: delete {self.run_dir} and launch its "
                "command again to train it anew"
            ) from None

    def _require_prompt(self, what: str) -> None:
        if self.method != "prompt":
            raise RunReadError(
                f"{self.run_dir} is a method={self.method} run; {what} needs a prompt-tuning run"
            )


def read_run(run_dir: str | Path) -> TrainedRun:
    """Read a finished task run; one line naming what is missing otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunReadError(f"no such run directory: {run_dir}")
    if (run_dir / "summary.json").exists() and not (run_dir / BEST).exists():
        tasks = sorted(p.parent.name for p in run_dir.glob(f"*/{BEST}"))
        raise RunReadError(
            f"{run_dir} is a multi-task job; give one of its task runs "
            f"({', '.join(str(run_dir / t) for t in tasks) or 'none has best/ yet'}) or the "
            "whole directory to a command that takes several runs"
        )
    if not (run_dir / BEST).is_dir():
        raise RunReadError(
            f"{run_dir} has no {BEST}/ (no evaluated prompt yet: the run has not reached its "
            "first eval); give a run directory that holds best/"
        )
    config = run_dir / CONFIG if (run_dir / CONFIG).exists() else run_dir.parent / CONFIG
    if not config.exists():
        raise RunReadError(f"{run_dir} has no {CONFIG} (nor its parent): not a repro run")
    cfg = load_config(OmegaConf.load(config))
    result = read_json(run_dir / RESULT) or {}
    sidecar = read_json(run_dir / BEST / "prompt.json") or {}
    task_name = result.get("task") or sidecar.get("task") or cfg.task.name
    if task_name == "superglue":  # a job-level config read for a task sub-directory
        task_name = run_dir.name
    checkpoint = result.get("checkpoint") or sidecar.get("backbone")
    if not checkpoint:
        checkpoint = checkpoint_for(cfg)
    method = str(
        getattr(getattr(cfg, "method", None), "name", None) or result.get("method") or "prompt"
    )
    return TrainedRun(run_dir, cfg, get_task(task_name), result, str(checkpoint), method)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every task run (a directory holding ``best/``) under each path, sorted; a path that is
    itself a run counts as one. Raises RunReadError for a path without any."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise RunReadError(f"no such run or sweep directory: {path}")
        runs = [path] if (path / BEST).is_dir() else _runs_below(path)
        if not runs:
            if any((path / f).exists() for f in (CONFIG, RESULT, "summary.json", "metrics.jsonl")):
                read_run(path)  # a run: names what it lacks (best/, a multi-task job's task)
            raise RunReadError(
                f"no runs found in {path}: no directory there holds {BEST}/; give run "
                "directories or a sweep directory holding them"
            )
        found.extend(r for r in runs if r not in found)
    return found


def _runs_below(root: Path) -> list[Path]:
    runs = []
    for best in sorted(root.rglob(BEST)):
        parts = set(best.relative_to(root).parts[:-1])
        if best.is_dir() and not parts & _NOT_RUNS:
            runs.append(best.parent)
    return runs


# --- turning a run into a model that scores --------------------------------------------------


@dataclass
class Backbone:
    """A frozen backbone and its tokenizer, loaded once and shared by the runs trained on it."""

    checkpoint: str
    model: Any
    tokenizer: Any


def load_backbone_of(run: TrainedRun) -> Backbone:
    """The run's frozen backbone (its config's dtype and options) and tokenizer."""
    model_cfg = run.cfg.model
    tokenizer = load_tokenizer(run.checkpoint, trust_remote_code=model_cfg.trust_remote_code)
    backbone = load_backbone(
        run.checkpoint,
        dtype=model_cfg.dtype,
        attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=model_cfg.trust_remote_code,
        fused_gelu=model_cfg.fused_gelu,
    )
    return Backbone(run.checkpoint, backbone.eval(), tokenizer)


def _prompt_scorer(run: TrainedRun, backbone: Backbone):
    """Prompt tuning: ``best/``'s prompt in front of the plain backbone (a LoRA run scored
    before it on the same backbone leaves no adapter behind: :func:`repro.lora.without_lora`)."""
    backbone.model = without_lora(backbone.model)
    prompt = SoftPrompt(run.best_prompt())
    if family_of(backbone.model.config) == CAUSAL:  # numbered as the run numbered its tokens
        return PromptedCausalLM(backbone.model, prompt, positions=run.cfg.model.positions).eval()
    return PromptedT5(backbone.model, prompt).eval()


def _model_scorer(run: TrainedRun, backbone: Backbone):
    """Model tuning: ``best/`` is the whole tuned model (a checkpoint of its own)."""
    model_cfg = run.cfg.model
    tuned = load_backbone(
        run.run_dir / BEST,
        dtype=model_cfg.dtype,
        attn_implementation=model_cfg.attn_implementation,
        fused_gelu=model_cfg.fused_gelu,
    )
    if family_of(tuned.config) == CAUSAL:
        return TunedCausalLM(tuned, positions=model_cfg.positions).eval()
    return TunedT5(tuned).eval()


def _lora_scorer(run: TrainedRun, backbone: Backbone):
    """LoRA: the frozen backbone with ``best/``'s adapter injected (peft); a causal LM's
    tokens numbered as the run numbered them."""
    m = run.cfg.method
    lora = dict(r=m.r, alpha=m.alpha, dropout=m.dropout, target_modules=m.target_modules)
    if family_of(backbone.model.config) == CAUSAL:
        model = LoraCausalLM(backbone.model, **lora, positions=run.cfg.model.positions)
    else:
        model = LoraT5(backbone.model, **lora)
    model.load_adapter(run.run_dir / BEST)
    return model.eval()


# method name → (run, backbone) → a model with PromptedT5's generate / score_candidates.
SCORERS: dict[str, Callable[[TrainedRun, Backbone], Any]] = {
    "prompt": _prompt_scorer,
    "model": _model_scorer,
    "lora": _lora_scorer,
}


def load_scorer(run: TrainedRun, backbone: Backbone | None = None):
    """The model that predicts as ``run``'s best checkpoint did, and its backbone.

    Returns:
        (model, backbone): ``model`` has ``generate(ids, mask, max_new_tokens)`` and
        ``score_candidates(ids, mask, candidates)`` (:class:`repro.model.PromptedT5`'s).
    """
    if run.method not in SCORERS:
        raise RunReadError(
            f"{run.run_dir}: no scorer for method={run.method}; known: {', '.join(SCORERS)}"
        )
    backbone = backbone or load_backbone_of(run)
    return SCORERS[run.method](run, backbone), backbone


def eval_examples(run: TrainedRun, task: Task | None = None, data_dir: str | None = None):
    """The dev examples of ``task`` (default the run's own) as the run would read them: its
    data directory (or ``data_dir`` for another task), generated data from the cache, or the hub;
    capped at the run's ``task.max_eval_examples``."""
    task = task or run.task
    given = data_dir if task is not run.task else (data_dir or run.cfg.task.data_dir)
    # the run's own data_dir, shared by the tasks of its job: the task's own sub-directory
    shared = task is run.task and not data_dir
    tasks = task_names(run.cfg.task.name) if shared else ()
    directory = data_dir_for(task, given, run.cfg.paths.cache_dir, tasks=tasks)
    if task.generate is not None and not given:
        ensure_generated(task, directory)
    examples = task.examples(task.eval_split, directory)
    if run.cfg.task.max_eval_examples:
        examples = examples[: run.cfg.task.max_eval_examples]
    return examples


def encoded_inputs(run: TrainedRun, examples, tokenizer) -> list[list[int]]:
    """Input ids of ``examples`` as ``run`` was evaluated: its objective's sentinel placement
    (``inputs_and_targets`` appends it to the inputs) and its input length limit."""
    objective = run.cfg.objective
    if objective.uses_sentinel:
        examples = add_sentinel(examples, objective.sentinel_placement)
    max_in = run.cfg.task.max_input_length or run.task.max_input_length
    if run.result.get("family") == CAUSAL:  # [bos] input separator, as repro.causal encodes it
        sep = run.cfg.model.separator
        return encode_for(CAUSAL, examples, tokenizer, max_in, 2, sep).input_ids
    ids, _ = _tokenize([ex.inputs for ex in examples], tokenizer, max_in, tokenizer.eos_token_id)
    return ids


def candidates_of(run: TrainedRun, task: Task | None = None) -> list[str]:
    """The label strings ``run`` ranks (``task``'s, default its own), as it was trained to
    produce them (with the sentinel prefix for a Span Corruption + Sentinel run)."""
    labels = (task or run.task).labels
    return [f"{SENTINEL} {c}" if run.cfg.objective.uses_sentinel else c for c in labels]


def generation_limit(run: TrainedRun, task: Task | None = None) -> int:
    """New tokens to generate: the run's recorded target limit, at least ``task``'s own."""
    limits = [run.result.get("max_target_length"), run.cfg.task.max_target_length]
    limits.append((task or run.task).max_target_length)
    return max([int(x) for x in limits if x] or [8])
