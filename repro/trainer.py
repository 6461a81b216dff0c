"""The one training loop every run of every sweep goes through.

What is optimised is the model's ``trainable_parameters()``: the prompt (``PromptedT5``,
``PromptedCausalLM``: prompt tuning), every backbone weight (``TunedT5``, ``TunedCausalLM``:
model tuning) or a LoRA adapter (``LoraT5``); the model's ``saves`` says which, and its
``padding_side`` how its inputs are padded (a causal LM's on the left). Every ``eval_every`` steps the
model is scored on dev; the best is kept in ``best/`` (early stopping on the task score: the
prompt, or a full checkpoint of the backbone) and the full training state in ``last/``, from
which a run started again in the same directory resumes bit-exactly on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from repro.backbone import load_backbone_weights, save_backbone
from repro.cli import first_line
from repro.data import collate, token_micro_batches, train_batches
from repro.files import publish_dir, recover_dir
from repro.model import Seq2SeqTuning
from repro.optim import build_prompt_optimizer
from repro.precision import Precision, resolve_precision
from repro.prompts import PROMPT_FILE, PromptFileError, load_prompt, save_prompt
from repro.rng import rng_state, set_rng_state
from repro.tracking import MetricsLog
from repro.trainer_config import TrainerConfig, divisors

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
TRAINED_SIDECAR = "trained.json"  # beside a model-tuning checkpoint: step, backbone, task, ...


@dataclass
class TrainState:
    """Where training stands; saved in ``last/`` next to the prompt."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # index of the next batch within the epoch's batch order
    best_step: int = -1
    best_score: float = -math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    # the training loss summed since the last log line, and over how many steps: a resume goes
    # on with the window, so the next loss line is the uninterrupted run's
    window_loss: float = 0.0
    window_steps: int = 0
    # the micro-batches per step an out-of-memory retry settled at (trainer.grad_accum=auto; 0:
    # none yet): a resume starts there, as the uninterrupted run goes on there
    grad_accum: int = 0


class NonFiniteLoss(FloatingPointError):
    pass


class Interrupted(Exception):
    """Training stopped early on request (step budget, SIGTERM); ``last/`` holds the state."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"stopped at step {step} ({reason}); run again to resume")
        self.step = step


class StopFlag:
    """Set from a signal handler or a step budget; the loop checkpoints and stops when set."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = reason


def resolve_device(name: str) -> torch.device:
    """``trainer.device`` → a torch device; a device this machine does not have is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    available = {
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
    }.get(device.type, lambda: True)
    if not available():
        raise ValueError(
            f"trainer.device={name!r}: this machine has no {device.type} device; use auto or cpu"
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"trainer.device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


# --- checkpoints -----------------------------------------------------------------------------


def save_trained(directory: Path, model: Seq2SeqTuning, step: int, sidecar: Mapping) -> None:
    """What the model trained, into ``directory``: ``prompt.safetensors`` + ``prompt.json``
    (prompt tuning), or a loadable checkpoint of the whole backbone + ``trained.json`` (model
    tuning; the tokenizer's files too when the model carries one, so ``model.path=<best/>``
    loads it), or the LoRA adapter alone + ``trained.json`` (LoRA)."""
    saves = getattr(model, "saves", "prompt")  # prompt | backbone | adapter (the model's class)
    if saves != "prompt":
        if saves == "adapter":
            model.save_adapter(directory)
        else:
            save_backbone(model.backbone, directory, getattr(model, "tokenizer", None))
        meta = json.dumps({"step": step, **sidecar}, indent=2, default=str)
        (directory / TRAINED_SIDECAR).write_text(meta)
    else:
        save_prompt(model.prompt.weight, directory, step=step, **sidecar)


def save_checkpoint(
    directory: Path, model: Seq2SeqTuning, optimizer, state: TrainState, sidecar: Mapping
) -> None:
    """Write ``last/`` (what is trained, optimizer, RNG, step, data position) crash-safely
    (:func:`repro.files.publish_dir`: written aside, then swapped in)."""

    def write(staging: Path) -> None:
        save_trained(staging, model, state.step, sidecar)
        torch.save(
            {"state": asdict(state), "optimizer": optimizer.state_dict(), "rng": rng_state()},
            staging / STATE_FILE,
        )

    publish_dir(directory, write)


def load_trained(directory: Path, model: Seq2SeqTuning) -> None:
    """Copy what ``save_trained`` wrote in ``directory`` into ``model``.

    Raises:
        ValueError: an unreadable file (named), or a prompt / weights of another shape.
    """
    saves = getattr(model, "saves", "prompt")
    if saves != "prompt":
        lora = saves == "adapter"
        try:
            if lora:
                model.load_adapter(directory)
            else:
                load_backbone_weights(model.backbone, directory)
        except ValueError:
            raise
        except Exception as err:  # safetensors / OS errors of a torn or foreign file
            name = "adapter_model.safetensors" if lora else "model.safetensors"
            raise ValueError(_unreadable(directory / name, err)) from None
        return
    try:
        prompt, _ = load_prompt(directory, d_model=model.prompt.width)
    except PromptFileError as err:  # the file named: prompt.safetensors or its prompt.json
        raise ValueError(_unreadable(err.path, err.__cause__ or err)) from None
    except OSError as err:
        raise ValueError(_unreadable(directory / PROMPT_FILE, err)) from None
    if prompt.shape != model.prompt.weight.shape:
        raise ValueError(
            f"checkpoint {directory} holds a prompt of shape {tuple(prompt.shape)}, but this run "
            f"builds one of shape {tuple(model.prompt.weight.shape)}"
        )
    with torch.no_grad():
        model.prompt.weight.copy_(prompt)


def load_checkpoint(directory: Path, model: Seq2SeqTuning, optimizer) -> TrainState | None:
    """Restore from ``last/`` (repaired first if a kill hit mid-swap); None if there is none.

    Raises:
        ValueError: a checkpoint file that cannot be read, naming it (delete ``last/`` to start
            the run over), or a prompt / weights of another shape than this run builds.
    """
    recover_dir(directory)
    if not (directory / STATE_FILE).exists():
        return None
    try:  # weights_only: a checkpoint is data, never code.
        saved = torch.load(directory / STATE_FILE, weights_only=True)
        saved_state = TrainState(**saved["state"])
    except Exception as err:  # torch raises several kinds for a torn or foreign file
        raise ValueError(_unreadable(directory / STATE_FILE, err)) from None
    load_trained(directory, model)
    check_best(directory.parent / "best", directory)
    optimizer.load_state_dict(saved["optimizer"])
    set_rng_state(saved["rng"])
    return saved_state


def check_best(best: Path, last: Path) -> None:
    """Refuse to resume beside an unreadable ``best/`` (what the run keeps and reports): its
    safetensors headers and JSON files are read, naming a torn or foreign one."""
    for file in sorted(best.glob("*")):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt"):  # the header only
                    pass
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except Exception as err:  # safetensors' SafetensorError, OSError, UnicodeDecodeError...
            raise ValueError(
                f"checkpoint file {file} cannot be read ({first_line(err)}); delete {best} and "
                f"{last} to start this run over from step 0"
            ) from None


def _unreadable(path: Path, err: BaseException) -> str:
    return (
        f"checkpoint file {path} cannot be read ({first_line(err)}); delete {path.parent} to start this "
        "run over from step 0"
    )


# --- the loop ---------------------------------------------------------------------------------


def _micro_batches(
    idx: list[int],
    train_ids,
    train_labels,
    accum: int,
    pad_id: int,
    batch_tokens=None,
    padding_side: str = "right",
) -> list[dict[str, torch.Tensor]]:
    if batch_tokens is None:  # accum micro-batches of equal example counts
        size = math.ceil(len(idx) / accum)
        chunks = [idx[i : i + size] for i in range(0, len(idx), size)]
    else:  # a token batch: micro-batches of at most batch_tokens / accum padded tokens
        lengths = {i: len(train_ids[i]) for i in idx}
        chunks = token_micro_batches(idx, lengths, batch_tokens // accum)
    return [
        collate(
            [{"input_ids": train_ids[i], "labels": train_labels[i]} for i in chunk],
            pad_id,
            padding_side,
        )
        for chunk in chunks
    ]


# torch >= 2.5 names it torch.OutOfMemoryError; older releases (the project allows 2.2) only
# torch.cuda.OutOfMemoryError, the same class where both exist.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def start_grad_accum(cfg: TrainerConfig, state: TrainState) -> int:
    """The micro-batch count a (resumed) run starts at: where an out-of-memory retry of
    ``trainer.grad_accum=auto`` settled (kept in ``last/``), else the config's."""
    return state.grad_accum if cfg.grad_accum_auto and state.grad_accum else cfg.grad_accum


def next_grad_accum(cfg: TrainerConfig, accum: int) -> int | None:
    """The micro-batch count to redo an out-of-memory step with: the next divisor of
    ``cfg.batch_size`` above ``accum`` when ``trainer.grad_accum=auto`` chose the count; None
    for an explicit count, or at one example per micro-batch already."""
    larger = [n for n in divisors(cfg.batch_size) if n > accum]
    return larger[0] if cfg.grad_accum_auto and larger else None


def out_of_memory(step: int, where: str, accum: int, auto: bool) -> OutOfMemoryError:
    """The error an out-of-memory step ends the run with: it names the switches to try."""
    fix = (
        ""
        if auto
        else "trainer.grad_accum=auto (retries with more micro-batches), a larger "
        "trainer.grad_accum, "
    ) + "model.gradient_checkpointing=true, model.dtype=bfloat16 or model.device_map=auto"
    return OutOfMemoryError(
        f"step {step}: out of memory {where} (trainer.grad_accum={accum}); try {fix} "
        "(python -m repro.cost prices each)"
    )


def free_after_out_of_memory() -> None:
    """Return the failed try's cached blocks to the device (its tensors are released already)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def forward_backward(
    model: Seq2SeqTuning, micro: Sequence[dict[str, torch.Tensor]], device, compute, step: int
) -> float:
    """Accumulate the trainable parameters' gradient over micro-batches; returns the batch's mean token loss.

    Each micro-batch loss is weighted by its share of the batch's target tokens, so the
    accumulated gradient equals that of one big batch (token-mean cross-entropy). ``compute``
    is the context the forward runs in (a :class:`repro.precision.Precision`).
    """
    total_tokens = sum(int((b["labels"] != -100).sum()) for b in micro)
    loss_value = 0.0
    for batch in micro:
        batch = {k: v.to(device) for k, v in batch.items()}
        weight = int((batch["labels"] != -100).sum()) / total_tokens
        with compute:
            loss, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"non-finite loss ({loss.item()}) at step {step}; "
                "try a lower trainer.optimizer.lr or float32 weights"
            )
        (loss * weight).backward()
        loss_value += loss.item() * weight
    return loss_value


def train(
    model: Seq2SeqTuning,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[Sequence[int]],
    *,
    evaluate_fn: Callable[[], dict[str, float]],
    score_fn: Callable[[Mapping[str, float]], float],
    cfg: TrainerConfig,
    out_dir: Path,
    seed: int,
    pad_id: int,
    sink,
    sidecar: Mapping[str, Any],
    device: torch.device,
    stop: StopFlag | None = None,
    precision: str | None = None,
) -> TrainState:
    """Train ``model``'s trainable parameters (its prompt, or every backbone weight) and return
    the final state (best step, best metrics).

    Args:
        train_ids, train_labels: tokenised training examples (no padding; eos included).
        evaluate_fn: scores the current model on dev → {metric: value on 0–100}.
        score_fn: metrics → the single number early stopping maximises.
        sidecar: what to write next to everything saved (backbone, init, task, ...).
        stop: checked after every step; when set, ``last/`` is saved and ``Interrupted`` raised.
        precision: the resolved precision (:func:`repro.precision.resolve_precision`) every
            step and evaluation runs in; None: ``cfg.precision`` resolved on ``device``.
    """
    stop = stop or StopFlag()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_log = MetricsLog(out_dir / "metrics.jsonl")
    optimizer = build_prompt_optimizer(model.trainable_parameters(), **asdict(cfg.optimizer))
    torch.manual_seed(seed)
    random.seed(seed)
    state = load_checkpoint(out_dir / "last", model, optimizer)
    if state is None:
        state = TrainState()
    else:
        log.info("resuming from step %d", state.step)
    # Drop what a killed session logged past its checkpoint (everything, if it never saved one):
    # those steps are done again, and no line may appear twice.
    metrics_log.truncate_after(state.step)
    lengths = [len(x) for x in train_ids]

    def epoch_order(epoch: int) -> list[list[int]]:
        """The epoch's batches: they depend only on the seed and the epoch."""
        return train_batches(
            lengths,
            cfg.batch_size,
            batching=cfg.batching,
            seed=seed,
            epoch=epoch,
            batch_tokens=cfg.batch_tokens,
        )

    order = epoch_order(state.epoch)
    padding_side = getattr(model, "padding_side", "right")  # a causal LM's inputs: "left"
    compute = Precision(precision or resolve_precision(cfg.precision, device), device)

    def checkpoint_and_eval() -> None:
        with compute:
            metrics = evaluate_fn()
        score = score_fn(metrics)
        record = {"kind": "eval", "step": state.step, **metrics, "score": score}
        if score > state.best_score:
            state.best_step, state.best_score, state.best_metrics = state.step, score, metrics
            publish_dir(out_dir / "best", lambda d: save_trained(d, model, state.step, sidecar))
        record["best_score"] = state.best_score
        metrics_log.append(record)
        sink.log(record, step=state.step)
        save_checkpoint(out_dir / "last", model, optimizer, state, sidecar)

    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=state.step,
        disable=not cfg.progress,
        desc=out_dir.name,
        leave=False,
    )
    timed_steps, window_start = 0, time.perf_counter()  # steps_per_s: this session's steps
    session_steps = 0
    accum = start_grad_accum(cfg, state)  # grows if a step runs out of memory, and stays grown
    while state.step < cfg.steps:
        # next batch (a new epoch reshuffles; the order depends only on seed and epoch)
        if state.position >= len(order):
            state.epoch, state.position = state.epoch + 1, 0
            order = epoch_order(state.epoch)
        idx = order[state.position]
        state.position += 1

        # forward/backward/step; out of memory with grad_accum=auto: the same step again in
        # more micro-batches (nothing was applied yet; dropout draws as if it were the first try)
        step_start = time.perf_counter()
        rng, loss_value = rng_state(), None
        while loss_value is None:
            optimizer.zero_grad(set_to_none=True)
            micro = _micro_batches(
                idx, train_ids, train_labels, accum, pad_id, cfg.batch_tokens, padding_side
            )
            try:
                loss_value = forward_backward(model, micro, device, compute, state.step + 1)
            except OutOfMemoryError:
                failed = len(micro[0]["input_ids"])
            if loss_value is None:  # out of the except block: its frames' tensors are freed
                optimizer.zero_grad(set_to_none=True)
                larger = next_grad_accum(cfg, accum)
                where = f"with micro-batches of {failed} example(s)"
                if larger is None:
                    raise out_of_memory(state.step + 1, where, accum, cfg.grad_accum_auto)
                free_after_out_of_memory()
                step = state.step + 1
                log.warning(
                    "step %d: out of memory %s; retrying with grad_accum %d", step, where, larger
                )
                accum = state.grad_accum = larger
                set_rng_state(rng)
        optimizer.step()
        state.step += 1
        session_steps += 1
        state.train_seconds += time.perf_counter() - step_start

        # log
        state.window_loss, state.window_steps = (
            state.window_loss + loss_value,
            state.window_steps + 1,
        )
        timed_steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=optimizer.param_groups[0]["lr"])
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            elapsed = time.perf_counter() - window_start
            record = {
                "kind": "train",
                "step": state.step,
                "loss": state.window_loss / state.window_steps,
                "lr": optimizer.param_groups[0]["lr"],
                "steps_per_s": timed_steps / elapsed if elapsed > 0 else None,
                "epoch": state.epoch,
            }
            metrics_log.append(record)
            sink.log(record, step=state.step)
            state.window_loss, state.window_steps = 0.0, 0
            timed_steps, window_start = 0, time.perf_counter()

        # eval + checkpoint
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            checkpoint_and_eval()
            model.train()

        # stop early when asked (preemption signal, per-session step budget)
        if cfg.stop_after_steps and session_steps >= cfg.stop_after_steps:
            stop.set(f"trainer.stop_after_steps={cfg.stop_after_steps}")
        if stop.reason and state.step < cfg.steps:
            save_checkpoint(out_dir / "last", model, optimizer, state, sidecar)
            bar.close()
            raise Interrupted(state.step, stop.reason)
    bar.close()
    # stop: a run resumed after its last step has nothing left to do but report
    if state.best_step < 0:
        checkpoint_and_eval()
    return state
