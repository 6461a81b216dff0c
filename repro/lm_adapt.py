"""LM adaptation: continue training all weights of T5.1.1 on the prefix-LM objective (Fig. 3d).

Only the 100K-step LM-adapted checkpoints were ever released; Figure 3(d) also needs 10K and
50K. This stage makes them from the T5.1.1 checkpoint itself:

    python -m repro.lm_adapt model=base lm_adapt.steps=[10000,50000,100000]
    torchrun --nproc_per_node=8 -m repro.lm_adapt model=xl        # data parallel, one node

    T5.1.1 ─► C4 en (streamed) or a local corpus ─► prefix-LM examples (random split point:
    prefix → input, continuation → target) ─► fixed-length batches ─► Adafactor (T5's
    pre-training settings) ─► <paths.lm_adapt_dir>/<size>/step_<N>/  (a plain HF checkpoint)

``repro.run`` picks these up with ``objective=lm_adapt lm_adapt_steps=N``. A run interrupted at
any point resumes from ``<size>/last/`` (weights, optimizer, step, RNG, data position) and ends
bit-identical on CPU to one that never stopped. See docs/lm_adapt.md for the choices made.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro.config import ModelConfig, PathsConfig
from repro.files import write_json_atomic
from repro.tracking import MetricsLog

log = logging.getLogger("repro.lm_adapt")

# T5's prefix_lm preprocessor works on one random chunk of at most this many tokens per document
# (`select_random_chunk(max_length=65536)`); longer C4 documents are rare.
MAX_CHUNK = 65_536
STATE_FILE = "train_state.pt"
MANIFEST = "manifest.json"
IGNORE_INDEX = -100
CORPUS_SUFFIXES = (".txt", ".jsonl")


# --- config -----------------------------------------------------------------------------------


@dataclass
class LMAdaptConfig:
    """What one LM-adaptation run does. Defaults follow T5's pre-training (see docs/lm_adapt.md)."""

    steps: list[int] = field(default_factory=lambda: [10_000, 50_000, 100_000])
    corpus: str | None = None  # local .txt (one document a line) or .jsonl ("text"); None = C4
    dataset: str = "allenai/c4"  # streamed with `datasets` when `corpus` is None
    dataset_config: str = "en"
    split: str = "train"
    # T5's prefix_lm cuts documents into segments of input_length - 1 tokens, so a target can be
    # up to input_length - 2 tokens: 512 keeps every token (114 would drop most continuations).
    input_length: int = 512
    target_length: int = 512
    batch_size: int = 128  # global (all ranks, all micro-batches); T5: 128 x 512 tokens
    grad_accum: int = 1  # micro-batches per step on each rank
    # Adafactor, T5 pre-training: lr = 1/sqrt(max(step + step_offset, warmup_steps)), parameter
    # scaling on, β2 = 1 - t^-0.8, update clipping 1.0, no momentum, no weight decay.
    warmup_steps: int = 10_000
    step_offset: int = 0  # e.g. 1000000: continue the schedule of T5.1.1's 1M pre-training steps
    dropout: float = 0.0  # T5.1.1 was pre-trained without dropout
    bf16_autocast: bool = False
    device: str = "auto"  # auto = cuda (this rank's GPU) if available, else cpu
    seed: int = 0
    save_every: int = 1_000  # how often last/ is written (besides every listed step)
    log_every: int = 100
    progress: bool = True

    def __post_init__(self) -> None:
        steps = list(self.steps)
        ints = all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        if not steps or not ints or steps[0] < 1 or any(b <= a for a, b in pairwise(steps)):
            raise ValueError(
                f"lm_adapt.steps={steps!r} must be a non-empty list of positive, strictly "
                "increasing integers, e.g. [10000,50000,100000]"
            )
        for key, minimum in (
            ("input_length", 2),
            ("target_length", 2),
            ("batch_size", 1),
            ("grad_accum", 1),
            ("warmup_steps", 1),
            ("save_every", 1),
            ("log_every", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"lm_adapt.{key} must be an integer >= {minimum}; got {value!r}")
        if self.step_offset < 0 or self.seed < 0:
            raise ValueError(
                f"lm_adapt.step_offset and lm_adapt.seed must be >= 0; "
                f"got {self.step_offset} and {self.seed}"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"lm_adapt.batch_size={self.batch_size} is not a multiple of "
                f"lm_adapt.grad_accum={self.grad_accum}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lm_adapt.dropout must be in [0, 1); got {self.dropout}")
        if self.corpus is not None:
            path = Path(self.corpus).expanduser()
            if path.suffix not in CORPUS_SUFFIXES:
                raise ValueError(
                    f"lm_adapt.corpus={self.corpus} must end in "
                    f"{' or '.join(CORPUS_SUFFIXES)} (one document a line / JSON with 'text')"
                )
            if not path.is_file():
                raise FileNotFoundError(f"lm_adapt.corpus={self.corpus} does not exist")


@dataclass
class LMAdaptRun:
    """The primary config of ``conf/lm_adapt.yaml``: the shared model/paths groups + our node."""

    model: ModelConfig = field(default_factory=ModelConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    lm_adapt: LMAdaptConfig = field(default_factory=LMAdaptConfig)


def register_configs() -> None:
    """Register ``lm_adapt_schema`` (conf/lm_adapt.yaml's first default) in the ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="lm_adapt_schema", node=LMAdaptRun)


def to_lm_adapt_config(cfg: DictConfig) -> LMAdaptRun:
    """Composed DictConfig → validated ``LMAdaptRun`` (raises ValueError naming the bad value)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LMAdaptRun), plain))


def source_checkpoint(model: ModelConfig) -> str:
    """What LM adaptation starts from: ``model.path`` if set, else the T5.1.1 hub id."""
    if model.path:
        return model.path
    if "span_corruption" not in model.checkpoints:
        raise ValueError(
            f"model={model.size} names no T5.1.1 (span_corruption) checkpoint; "
            "set model.path to a local checkpoint directory"
        )
    return model.checkpoints["span_corruption"]


def output_dir(run: LMAdaptRun) -> Path:
    """``<paths.lm_adapt_dir>/<size>``: where ``step_<N>/``, ``last/`` and metrics go."""
    return Path(run.paths.lm_adapt_dir).expanduser() / run.model.size


# --- prefix-LM examples -----------------------------------------------------------------------


@dataclass(frozen=True)
class PrefixLMExample:
    """One example: ``inputs`` = prefix + [eos], ``targets`` = continuation + [eos]."""

    inputs: list[int]
    targets: list[int]


def prefix_lm_examples(
    token_ids: Sequence[int],
    rng: random.Random,
    *,
    input_length: int,
    target_length: int,
    eos_id: int,
) -> list[PrefixLMExample]:
    """T5's ``prefix_lm`` on one tokenised document.

    As T5: one random chunk of at most ``MAX_CHUNK`` tokens; cut into segments of
    ``input_length - 1`` tokens (room for eos); each segment of length L split at a point drawn
    uniformly from [1, L-1] (L = 1: all to the target). A continuation longer than
    ``target_length - 1`` is cut (T5 trims too); with ``target_length >= input_length - 1`` no
    token is lost, so prefix + continuation of every segment is the segment.

    Returns:
        Examples with ``len(inputs) <= input_length`` and ``len(targets) <= target_length``.
    """
    ids = list(token_ids)
    if len(ids) > MAX_CHUNK:
        start = MAX_CHUNK * rng.randrange(math.ceil(len(ids) / MAX_CHUNK))
        ids = ids[start : start + MAX_CHUNK]
    segment = input_length - 1
    examples = []
    for begin in range(0, len(ids), segment):
        piece = ids[begin : begin + segment]
        split = rng.randint(min(1, len(piece) - 1), len(piece) - 1)
        continuation = piece[split:][: target_length - 1]
        examples.append(PrefixLMExample([*piece[:split], eos_id], [*continuation, eos_id]))
    return examples


def collate_fixed(
    examples: Sequence[PrefixLMExample], input_length: int, target_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad to the fixed lengths (static shapes on every step and device).

    Returns:
        ``input_ids`` and ``attention_mask`` [B, input_length], ``labels`` [B, target_length]
        (padding = -100, ignored by the loss).
    """
    n = len(examples)
    input_ids = torch.full((n, input_length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, input_length), dtype=torch.long)
    labels = torch.full((n, target_length), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(examples):
        input_ids[row, : len(ex.inputs)] = torch.tensor(ex.inputs)
        attention_mask[row, : len(ex.inputs)] = 1
        labels[row, : len(ex.targets)] = torch.tensor(ex.targets)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- the corpus -------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Documents by global index; ``open_pass(skip)`` iterates one pass from document ``skip``."""

    name: str
    open_pass: Callable[[int], Iterator[str]]
    size: int | None  # None: a stream too large to wrap around (C4 en: 365M documents)


def _read_local(path: Path, skip: int) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(islice(f, skip, None), start=skip + 1):
            if path.suffix == ".txt":
                yield line.rstrip("\n")
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{path} line {number} is not a JSON object with a 'text' field"
                ) from None
            yield text


def open_corpus(cfg: LMAdaptConfig) -> Corpus:
    """The local corpus (counted once, so it can wrap around) or the streamed hub dataset."""
    if cfg.corpus is not None:
        path = Path(cfg.corpus).expanduser()
        with open(path, encoding="utf-8") as f:
            size = sum(1 for _ in f)
        if size == 0:
            raise ValueError(f"lm_adapt.corpus={cfg.corpus} holds no documents")
        return Corpus(str(path), lambda skip: _read_local(path, skip), size)

    def stream(skip: int) -> Iterator[str]:
        import datasets

        ds = datasets.load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.split, streaming=True)
        for record in ds.skip(skip) if skip else ds:
            yield record["text"]

    return Corpus(f"{cfg.dataset}:{cfg.dataset_config}:{cfg.split}", stream, None)


def read_documents(corpus: Corpus, start: int, rank: int, world: int) -> Iterator[tuple[int, str]]:
    """(global index, text) of documents ``start, start+1, ...`` that belong to ``rank``.

    Rank r of W reads every W-th document (index % W == r); a local corpus wraps around (the
    index keeps growing, so the next pass draws new split points).
    """
    index = start
    while True:
        offset = index % corpus.size if corpus.size else index
        yielded = False
        for text in corpus.open_pass(offset):
            yielded = True
            if index % world == rank:
                yield index, text
            index += 1
        if corpus.size is None:
            raise ValueError(f"the corpus {corpus.name} ran out after {index} documents")
        if not yielded and offset == 0:
            raise ValueError(f"the corpus {corpus.name} holds no documents")


def example_rng(seed: int, index: int) -> random.Random:
    """The split points of document ``index`` depend on (seed, index) only: resumable anywhere."""
    return random.Random(f"lm_adapt-{seed}-{index}")  # str seeds hash the same in every process


class ExampleStream:
    """Prefix-LM examples of one rank, and where it stands: ``position = [document, taken]``.

    ``position`` = resume at document ``document`` having used ``taken`` of its examples; it is
    what ``last/`` stores (one per rank), so a resumed run draws exactly the same examples.
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer,
        cfg: LMAdaptConfig,
        *,
        position: Sequence[int] = (0, 0),
        rank: int = 0,
        world: int = 1,
    ):
        self.position = [int(position[0]), int(position[1])]
        self._examples = self._generate(corpus, tokenizer, cfg, rank, world)

    def _generate(self, corpus, tokenizer, cfg, rank, world):
        start, skip = self.position
        for index, text in read_documents(corpus, start, rank, world):
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            examples = prefix_lm_examples(
                ids,
                example_rng(cfg.seed, index),
                input_length=cfg.input_length,
                target_length=cfg.target_length,
                eos_id=tokenizer.eos_token_id,
            )
            first = skip if index == start else 0
            for k in range(first, len(examples)):
                yield index, k, examples[k]

    def take(self, n: int) -> list[PrefixLMExample]:
        out = []
        for index, k, example in islice(self._examples, n):
            out.append(example)
            self.position = [index, k + 1]
        return out


# --- optimizer --------------------------------------------------------------------------------


def rsqrt_lr(step: int, warmup_steps: int = 10_000, step_offset: int = 0) -> float:
    """T5's inverse-square-root schedule for update ``step`` (1-based): 1/sqrt(max(t, warmup)).

    With ``step_offset=0`` and warmup 10,000 this is what HF ``Adafactor(relative_step=True)``
    computes (``min(1e-2, 1/sqrt(t))``), bit for bit.
    """
    return 1.0 / math.sqrt(max(step + step_offset, warmup_steps))


def build_optimizer(params, cfg: LMAdaptConfig):
    """HF Adafactor as T5 pre-trained: factored second moments, β2 = 1 - t^-0.8, eps (1e-30,
    1e-3), update clipping 1.0, parameter scaling, no momentum, no weight decay. The learning
    rate is set before every step from ``rsqrt_lr`` (so the schedule can be offset)."""
    from transformers.optimization import Adafactor

    return Adafactor(
        params,
        lr=rsqrt_lr(1, cfg.warmup_steps, cfg.step_offset),
        eps=(1e-30, 1e-3),
        clip_threshold=1.0,
        decay_rate=-0.8,
        beta1=None,
        weight_decay=0.0,
        scale_parameter=True,
        relative_step=False,
        warmup_init=False,
    )


# --- checkpoints ------------------------------------------------------------------------------


def _swap_in(staging: Path, directory: Path) -> None:
    """Replace ``directory`` by ``staging``; a crash leaves the old one as ``.<name>.old``."""
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _staging(directory: Path) -> Path:
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def save_step_checkpoint(directory: Path, model, tokenizer, manifest: dict[str, Any]) -> None:
    """A standard HF checkpoint (config, safetensors, tokenizer) + manifest, written aside."""
    staging = _staging(directory)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_json_atomic(staging / MANIFEST, manifest)
    _swap_in(staging, directory)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    directory: Path,
    model,
    optimizer,
    *,
    step: int,
    positions: list[list[int]],
    rngs: list[dict[str, Any]],
    fingerprint: dict[str, Any],
    manifest: dict[str, Any],
) -> None:
    """``last/``: weights (safetensors), optimizer, step, RNG and data position of every rank."""
    staging = _staging(directory)
    model.save_pretrained(staging)
    torch.save(
        {
            "step": step,
            "positions": positions,
            "optimizer": optimizer.state_dict(),
            "rng": rngs,
            "fingerprint": fingerprint,
        },
        staging / STATE_FILE,
    )
    write_json_atomic(staging / MANIFEST, manifest)
    _swap_in(staging, directory)


def find_state(directory: Path) -> Path | None:
    """``last/``, or the previous one if a crash hit mid-swap; None if there is none."""
    for candidate in (directory, directory.with_name(f".{directory.name}.old")):
        if (candidate / STATE_FILE).exists():
            return candidate
    return None


# --- the run ----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _gather(value: Any, world: int) -> list[Any]:
    """``value`` of every rank, in rank order (every rank must call this at the same point)."""
    if world == 1:
        return [value]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def fingerprint(run: LMAdaptRun, source: str, corpus: Corpus, world: int) -> dict[str, Any]:
    """What decides the trajectory: a ``last/`` made with anything else cannot be resumed."""
    cfg = asdict(run.lm_adapt)
    for key in ("steps", "save_every", "log_every", "progress", "device"):
        cfg.pop(key)
    return {"source": source, "corpus": corpus.name, "world_size": world, **cfg}


def lm_adapt(run: LMAdaptRun) -> dict[str, Any]:
    """Run (or resume) LM adaptation up to ``max(lm_adapt.steps)``; returns the last manifest.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains a DistributedDataParallel copy
    on its share of the documents and only rank 0 writes.
    """
    cfg = run.lm_adapt
    rank, world, local_rank = _distributed()
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(
            f"lm_adapt.batch_size={cfg.batch_size} must be a multiple of WORLD_SIZE x "
            f"lm_adapt.grad_accum = {world} x {cfg.grad_accum}"
        )
    device = _device(cfg.device, local_rank)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(run, rank, world, device)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _train(run: LMAdaptRun, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    from repro.backbone import set_dropout
    from repro.tiny import ensure_tiny_t5

    cfg = run.lm_adapt
    out = output_dir(run)
    source = source_checkpoint(run.model)
    if run.model.build_tiny and run.model.path and rank == 0:
        ensure_tiny_t5(run.model.path)
    if world > 1:
        torch.distributed.barrier()
    corpus = open_corpus(cfg)
    mine = fingerprint(run, source, corpus, world)

    # setup: weights from last/ when resuming, else the source checkpoint
    torch.manual_seed(cfg.seed + rank)  # dropout masks differ across ranks
    random.seed(cfg.seed + rank)
    state_dir = find_state(out / "last")
    saved = None
    if state_dir is not None:
        saved = torch.load(state_dir / STATE_FILE, weights_only=True)  # data, never code
        if saved["fingerprint"] != mine:
            theirs = saved["fingerprint"]
            diffs = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(
                f"{state_dir} holds LM adaptation with different settings (differs in: "
                f"{', '.join(diffs)}); use another paths.lm_adapt_dir or delete {out}"
            )
    tokenizer = AutoTokenizer.from_pretrained(source)
    # fp32 master weights whatever model.dtype says (prompt tuning's frozen-backbone dtype);
    # bf16 activations are lm_adapt.bf16_autocast
    kwargs = {"dtype": torch.float32}
    if run.model.attn_implementation:
        kwargs["attn_implementation"] = run.model.attn_implementation
    model = T5ForConditionalGeneration.from_pretrained(
        str(state_dir) if saved else source, **kwargs
    )
    set_dropout(model, cfg.dropout)
    model.to(device).train()
    optimizer = build_optimizer(model.parameters(), cfg)
    step, positions = 0, [[0, 0] for _ in range(world)]
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"][rank])
        step, positions = saved["step"], saved["positions"]
        log.info("resuming LM adaptation from step %d (%s)", step, state_dir)
    todo = [s for s in cfg.steps if s > step]
    missing = [s for s in cfg.steps if s <= step and not (out / f"step_{s}" / MANIFEST).exists()]
    if missing:
        raise ValueError(
            f"lm_adapt.steps {missing} lie before the saved state (step {step}) in {out} and "
            "were never written; start a new run in another paths.lm_adapt_dir for them"
        )
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    stream = ExampleStream(corpus, tokenizer, cfg, position=positions[rank], rank=rank, world=world)
    micro_size = cfg.batch_size // (world * cfg.grad_accum)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast)
    metrics = MetricsLog(out / "metrics.jsonl") if rank == 0 else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if saved:
            metrics.truncate_after(step)

    def manifest(at: int) -> dict[str, Any]:
        return {
            "step": at,
            "source": source,
            "steps": list(cfg.steps),
            "corpus": corpus.name,
            "seed": cfg.seed,
            "input_length": cfg.input_length,
            "target_length": cfg.target_length,
            "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "world_size": world,
            "optimizer": {
                "name": "adafactor",
                "schedule": "rsqrt",
                "warmup_steps": cfg.warmup_steps,
                "step_offset": cfg.step_offset,
                "lr": rsqrt_lr(at, cfg.warmup_steps, cfg.step_offset),
            },
            "dropout": cfg.dropout,
            "bf16_autocast": cfg.bf16_autocast,
            "data_positions": positions,  # per rank: [next document, examples of it used]
            "versions": versions(),
        }

    bar = tqdm(total=todo[-1] if todo else step, initial=step, disable=not cfg.progress or rank)
    window, window_start = [], time.perf_counter()
    while todo:
        # next batch: grad_accum micro-batches of this rank's share
        micro = [
            collate_fixed(
                stream.take(micro_size), cfg.input_length, cfg.target_length, tokenizer.pad_token_id
            )
            for _ in range(cfg.grad_accum)
        ]
        tokens = torch.tensor(sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro))
        if world > 1:
            tokens = tokens.to(device)
            torch.distributed.all_reduce(tokens)
        tokens = int(tokens)

        # forward/backward/step — summed token losses over the global token count, times world
        # because DDP averages gradients: the step sees the global per-token mean loss
        for group in optimizer.param_groups:
            group["lr"] = rsqrt_lr(step + 1, cfg.warmup_steps, cfg.step_offset)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, batch in enumerate(micro):
            batch = {k: v.to(device) for k, v in batch.items()}
            # DDP: all-reduce the gradients once, after the last micro-batch
            last = i == len(micro) - 1
            with net.no_sync() if world > 1 and not last else nullcontext():
                with autocast:
                    logits = net(
                        input_ids=batch["input_ids"],
                        attention_mask=batch["attention_mask"],
                        decoder_input_ids=model.prepare_decoder_input_ids_from_labels(
                            labels=batch["labels"]
                        ),
                    ).logits
                loss = F.cross_entropy(
                    logits.float().flatten(0, 1),
                    batch["labels"].flatten(),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at step {step + 1}; try lm_adapt.bf16_autocast=false"
                    )
                (loss * (world / tokens)).backward()
            loss_sum += loss.detach().double()
        optimizer.step()
        step += 1
        if world > 1:
            torch.distributed.all_reduce(loss_sum)
        positions = [list(p) for p in _gather(stream.position, world)]
        loss_value = float(loss_sum) / tokens

        # log
        window.append(loss_value)
        bar.update(1)
        if rank == 0 and (step % cfg.log_every == 0 or step == todo[0]):
            elapsed = time.perf_counter() - window_start
            record = {
                "kind": "train",
                "step": step,
                "loss": sum(window) / len(window),
                "lr": optimizer.param_groups[0]["lr"],
                "steps_per_s": len(window) / elapsed if elapsed > 0 else None,
                "documents": max(p[0] for p in positions),
            }
            metrics.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window, window_start = [], time.perf_counter()

        # checkpoint: the listed steps as HF checkpoints, last/ to resume from
        listed = step == todo[0]
        if rank == 0 and listed:
            save_step_checkpoint(out / f"step_{step}", model, tokenizer, manifest(step))
            log.info("wrote %s", out / f"step_{step}")
        if listed or step % cfg.save_every == 0:
            rngs = _gather(_rng_state(), world)
        if rank == 0 and (listed or step % cfg.save_every == 0):
            save_state(
                out / "last",
                model,
                optimizer,
                step=step,
                positions=positions,
                rngs=rngs,
                fingerprint=mine,
                manifest=manifest(step),
            )
        if listed:
            todo.pop(0)
        if world > 1 and listed:
            torch.distributed.barrier()
    bar.close()
    return manifest(step)


# --- the Hydra entry --------------------------------------------------------------------------

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="lm_adapt")
def main(dcfg: DictConfig) -> None:
    try:
        run = to_lm_adapt_config(dcfg)
        result = lm_adapt(run)
    except (ValueError, KeyError, OSError, OmegaConfBaseException) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if _distributed()[0] == 0:
        print(f"{output_dir(run)}: LM adaptation at step {result['step']}")


if __name__ == "__main__":
    main()
