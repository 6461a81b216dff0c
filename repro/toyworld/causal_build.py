"""Build the toy world's decoder-only ladder: GPT-NeoX-shaped (Pythia's architecture) causal LMs
pre-trained from random init by next-token prediction on the toy world's corpus, with
checkpoints at three pre-training step counts (Pythia's ``step<N>`` revisions in miniature).
``python -m repro.toyworld build-causal`` runs it (docs/toy_world.md, "The causal ladder").

- corpus: the T5 toys' pre-training corpus (``world.documents(n_docs, seed)``, written by
  ``build.write_corpus``; the default hashes to the T5 manifest's ``pretrain_sha256``), each
  document tokenised and ended with eos, the documents concatenated and cut into segments of
  ``segment_length`` tokens (GPT-2 / Pythia packing: eos separates documents);
- tokenizer: the T5 toys' own (``toy_small/step_500``: SentencePiece BPE, vocabulary 600, pad 0,
  eos 1, unk 2, no bos), copied as is into every checkpoint, so T5 and causal toys share one
  vocabulary. It has no bos token, so the configs say ``bos_token_id: null``;
- optimizer: Pythia's recipe scaled down: AdamW (β 0.9 / 0.95, weight decay 0.01), linear
  warmup then cosine decay to 10 % of the peak at the last step, gradient clipping 1.0, no
  dropout; ``initializer_range`` 0.1, not GPT-NeoX's 0.02 (of 0.02 / 0.1 / 0.2, 0.1 trained the
  largest rung best in a short budget; measured in docs/toy_world.md);
- output (default ``repro/toy_models/``)::

      toy_causal_<size>/step_<N>/     config.json, model.safetensors (fp16), generation_config.json,
                                      tokenizer.json, tokenizer_config.json
      train_log_<sizes>.jsonl        training loss every log_every steps; eval loss, probe at saves
      manifest.json                  the key "causal" (the T5 toys' keys are left as they are)

Everything is seeded (``seed``); with the same thread count a rebuild gives the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repro.toyworld import world
from repro.toyworld.build import DEFAULT_OUT, count_params, git_commit, versions, write_corpus
from repro.toyworld.probe import LABEL_WORDS, RARE_ADJECTIVES, first_pieces, probe_items

log = logging.getLogger("repro.toyworld")

# The T5 toys' tokenizer (every toy checkpoint carries the same files)
TOKENIZER_DIR = DEFAULT_OUT / "toy_small" / "step_500"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class CausalSize:
    """Shape of one rung (GPT-NeoX: parallel residual, rotary on a quarter of each head, GELU
    MLP of width d_ff, untied LM head, biases in attention and MLP)."""

    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int  # 4 x d_model, as Pythia's

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads


# Head size 8 at least: Pythia's rotary covers a quarter of a head, and a head of 4 would leave
# one rotary dimension (rotation needs pairs).
SIZES: dict[str, CausalSize] = {
    "toy_causal_small": CausalSize(d_model=16, num_layers=2, num_heads=2, d_ff=64),
    "toy_causal_base": CausalSize(d_model=32, num_layers=3, num_heads=4, d_ff=128),
    "toy_causal_large": CausalSize(d_model=64, num_layers=4, num_heads=4, d_ff=256),
}


@dataclass
class CausalBuildConfig:
    """Everything that decides the shipped causal checkpoints (recorded in the manifest)."""

    sizes: tuple[str, ...] = tuple(SIZES)
    steps: tuple[int, ...] = (100, 500, 1500)  # checkpoints saved; the last is the budget
    seed: int = 0
    n_docs: int = 100_000  # the T5 toys' pre-training corpus (seed 0)
    segment_length: int = 128
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decay to 10 % of lr at the last step (Pythia)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    initializer_range: float = 0.1  # not GPT-NeoX's 0.02: trains the larger rungs faster (docs)
    save_dtype: str = "float16"  # as the T5 toys; loading casts to model.dtype
    eval_docs: int = 500  # held-out text (world seed + 2, unseen) for the eval loss
    probe_items: int = 200  # zero-shot probe items per skill at each saved step (probe.py)
    log_every: int = 50

    def __post_init__(self) -> None:
        unknown = [s for s in self.sizes if s not in SIZES]
        if unknown or not self.sizes:
            raise ValueError(f"unknown causal toy size(s) {unknown}; allowed: {', '.join(SIZES)}")
        steps = list(self.steps)
        if not steps or steps[0] < 1 or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must be positive and increasing; got {steps}")
        keys = ("n_docs", "segment_length", "batch_size", "eval_docs", "probe_items", "log_every")
        for key in keys:
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1; got {getattr(self, key)}")
        if self.save_dtype not in ("float16", "bfloat16", "float32"):
            raise ValueError(f"save_dtype={self.save_dtype!r}; allowed: float16, bfloat16, float32")
        if not (self.lr > 0 and self.initializer_range > 0):
            raise ValueError("lr and initializer_range must be > 0")


def neox_config(shape: CausalSize, tokenizer, initializer_range: float):
    """Pythia's GPT-NeoX config at one rung's shape, with the shared toy tokenizer's ids."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.d_model,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        intermediate_size=shape.d_ff,
        hidden_act="gelu",
        max_position_embeddings=2048,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.25,
        },
        use_parallel_residual=True,
        attention_bias=True,
        tie_word_embeddings=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        classifier_dropout=0.0,
        initializer_range=initializer_range,
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,  # None: the toy tokenizer has no bos
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# --- data -------------------------------------------------------------------------------------


def load_tokenizer(path: str | Path = TOKENIZER_DIR):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(f"the tokenizer at {path} needs eos and pad tokens")
    return tokenizer


def token_docs(docs: list[str], tokenizer) -> list[list[int]]:
    """Each document's ids, ending in eos (added here if the tokenizer does not add it)."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    return [[*d, eos] for d in ids]


def pack(docs: list[list[int]], length: int) -> np.ndarray:
    """Concatenate the documents and cut segments [N, length] (the tail is dropped)."""
    stream = np.fromiter((t for doc in docs for t in doc), dtype=np.int64)
    n = len(stream) // length
    if n == 0:
        raise ValueError(f"{len(stream)} tokens make no segment of {length}")
    return stream[: n * length].reshape(n, length)


def heldout_segments(tokenizer, n_docs: int, seed: int, length: int) -> np.ndarray:
    """Fresh text of the world (a corpus seed no build trains on), packed as in training."""
    return pack(token_docs(list(world.documents(n_docs, seed)), tokenizer), length)


@torch.no_grad()
def next_token_loss(model, segments: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy over every predicted token of the segments."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(segments), batch_size):
        ids = torch.from_numpy(segments[i : i + batch_size])
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = ids[:, 1:]
        total += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"))
        count += target.numel()
    model.train(was_training)
    return total / count


def lr_at(step: int, cfg: CausalBuildConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    last = max(cfg.steps)
    warmup = min(cfg.warmup_steps, max(last - 1, 1))
    if step <= warmup:
        return cfg.lr * step / warmup
    progress = (step - warmup) / max(last - warmup, 1)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def _answers(model, tokenizer, texts: list[str], pieces: list[int]) -> np.ndarray:
    """Which of ``pieces`` the model ranks highest as the next token after each text (padded on
    the right, which no real token of a causal LM attends to: each row reads as if alone)."""
    enc = tokenizer(
        texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt"
    )
    logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    last = enc.attention_mask.sum(1) - 1
    return logits[torch.arange(len(texts)), last][:, pieces].argmax(-1).numpy()


@torch.no_grad()
def causal_probe(model, tokenizer, n: int) -> dict[str, float]:
    """The build's zero-shot probe (probe.py: its items, chance 50) asked of a causal LM: after
    ``<context> <text>``, is the true label word's first piece likelier than the other's?
    ``review``, ``review_rare`` (balanced, the 3 rarest adjectives of a lexicon), ``fact``: %."""
    was_training = model.training
    model.eval()
    scores = {}
    for skill, items in probe_items(n).items():
        pieces = list(first_pieces(tokenizer, LABEL_WORDS[skill]))
        labels = np.array([y for *_, y in items])
        right = _answers(model, tokenizer, [f"{c} {t}" for c, t, _ in items], pieces) == labels
        scores[skill] = round(100.0 * float(right.mean()), 1)
        if skill == "review":
            rare = np.array([not RARE_ADJECTIVES.isdisjoint(t.split()) for _, t, _ in items])
            per_class = [right[rare & (labels == c)].mean() for c in (0, 1)]
            scores["review_rare"] = round(50.0 * float(sum(per_class)), 1)
    model.train(was_training)
    return scores


# --- pre-training -----------------------------------------------------------------------------


def save_checkpoint(model, dst: Path, dtype: str, tokenizer_dir: Path) -> None:
    """The model at ``dtype`` plus the toy tokenizer's files, copied byte for byte."""
    import copy

    if dst.exists():
        shutil.rmtree(dst)
    copy.deepcopy(model).to(getattr(torch, dtype)).save_pretrained(dst)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, dst / name)


def pretrain(
    size: str, segments: np.ndarray, cfg: CausalBuildConfig, out_dir: Path, tokenizer_dir: Path
) -> dict[str, Any]:
    """Pre-train one rung from random init; save ``out_dir/<size>/step_<N>`` at every N of
    ``cfg.steps``. Returns its stats and its log records (kept by the caller, in size order)."""
    from transformers import GPTNeoXForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(neox_config(SIZES[size], tokenizer, cfg.initializer_range))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases, layer norms
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    heldout = heldout_segments(tokenizer, cfg.eval_docs, cfg.seed + 2, cfg.segment_length)
    order, epoch, cursor = np.random.default_rng([cfg.seed, 0]).permutation(len(segments)), 0, 0
    losses, records, evals, probes, start = [], [], {}, {}, time.time()
    for step in range(1, max(cfg.steps) + 1):
        rows = []
        for _ in range(cfg.batch_size):
            if cursor == len(order):
                epoch, cursor = epoch + 1, 0
                order = np.random.default_rng([cfg.seed, epoch]).permutation(len(segments))
            rows.append(segments[int(order[cursor])])
            cursor += 1
        ids = torch.from_numpy(np.stack(rows))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        logits = model(input_ids=ids).logits[:, :-1]
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        if step % cfg.log_every == 0 or step in cfg.steps:
            window = losses[-cfg.log_every :]
            record = {
                "size": size,
                "stage": "next_token",
                "step": step,
                "loss": sum(window) / len(window),
                "lr": lr_at(step, cfg),
                "elapsed_s": round(time.time() - start, 1),
            }
            if step in cfg.steps:
                dst = out_dir / size / f"step_{step}"
                save_checkpoint(model, dst, cfg.save_dtype, tokenizer_dir)
                # scored as shipped: the saved (fp16) weights, loaded back in fp32
                shipped = GPTNeoXForCausalLM.from_pretrained(dst, dtype=torch.float32)
                evals[step] = record["eval_loss"] = next_token_loss(shipped, heldout)
                probes[str(step)] = record["probe"] = causal_probe(
                    shipped, tokenizer, cfg.probe_items
                )
            records.append(record)
            log.info("%s", record)
    window = losses[-cfg.log_every :]
    return {
        "size": size,
        "params": count_params(model),
        "final_train_loss": sum(window) / len(window),
        "eval_loss": {str(s): evals[s] for s in cfg.steps},
        "probe": probes,
        "epochs": epoch + cursor / len(order),
        "seconds": round(time.time() - start, 1),
        "records": records,
    }


def _pretrain_worker(args: tuple) -> dict[str, Any]:
    """One size in a worker process (``jobs > 1``), one torch thread."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return pretrain(*args)


# --- the build --------------------------------------------------------------------------------


def build_causal(
    out_dir: str | Path = DEFAULT_OUT,
    cfg: CausalBuildConfig | None = None,
    command: str | None = None,
    tokenizer_dir: str | Path = TOKENIZER_DIR,
    jobs: int = 1,
) -> dict[str, Any]:
    """Build the causal ladder into ``out_dir`` and merge its entry into ``manifest.json``
    (key ``causal``); returns that entry. ``jobs`` > 1 pre-trains that many sizes at once, each
    in its own process with one thread (the same weights as ``jobs=1`` with one thread)."""
    cfg = cfg or CausalBuildConfig()
    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_dir)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="toyworld-causal-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus_sha = write_corpus(corpus, cfg.n_docs, cfg.seed)
        docs = token_docs(corpus.read_text(encoding="utf-8").splitlines(), tokenizer)
    segments = pack(docs, cfg.segment_length)
    work = [(size, segments, cfg, out_dir, tokenizer_dir) for size in cfg.sizes]
    if jobs > 1 and len(work) > 1:
        # the largest first, so the smaller ones share the other worker
        by_cost = sorted(work, key=lambda w: -SIZES[w[0]].d_model)
        with ProcessPoolExecutor(min(jobs, len(work)), mp_context=get_context("spawn")) as pool:
            done = {r["size"]: r for r in pool.map(_pretrain_worker, by_cost)}
        results = [done[size] for size in cfg.sizes]
    else:
        results = [pretrain(*w) for w in work]
    log_path = out_dir / f"train_log_{'_'.join(cfg.sizes)}.jsonl"
    log_path.write_text("".join(json.dumps(r) + "\n" for res in results for r in res["records"]))
    models = {
        res["size"]: {
            "shape": {**asdict(SIZES[res["size"]]), "head_size": SIZES[res["size"]].head_size},
            "params": res["params"],
            "checkpoints": {f"step_{s}": f"{res['size']}/step_{s}" for s in cfg.steps},
            # mean next-token loss on held-out text of the world, per saved step (nats/token)
            "eval_loss": res["eval_loss"],
            # zero-shot accuracy (%) on the toy tasks' skills per saved step, chance 50
            "probe": res["probe"],
            "pretrain": {k: res[k] for k in ("final_train_loss", "epochs", "seconds")},
        }
        for res in results
    }
    tok_sha = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    entry = {
        "what": "the toy world's decoder-only ladder, GPT-NeoX / Pythia-shaped (docs/toy_world.md)",
        "command": command or "python -m repro.toyworld build-causal",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "corpus": {
            "docs": cfg.n_docs,
            "sha256": corpus_sha,
            "segments": len(segments),
            "tokens": int(segments.size),
            "eval": f"{cfg.eval_docs} documents of world seed {cfg.seed + 2} (unseen)",
        },
        "tokenizer": {
            "copied_from": "toy_small/step_500",
            "tokenizer_json_sha256": tok_sha,
            "vocab_size": len(tokenizer),
            "ids": {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id, "bos": None},
        },
        "objective": "next-token prediction on packed documents, each ended by eos",
        "optimizer": "AdamW (0.9, 0.95), warmup then cosine to min_lr_ratio, clip 1.0",
        "save_dtype": cfg.save_dtype,
        "jobs": jobs,
        "threads": 1 if jobs > 1 and len(work) > 1 else torch.get_num_threads(),
        "wall_seconds": round(time.time() - start, 1),
        "models": models,
        "git_commit": git_commit(),
        "versions": versions(),
    }
    return merge_manifest(out_dir / "manifest.json", entry)


def merge_manifest(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Write ``entry`` under the manifest's ``causal`` key, leaving every other key as it was.
    An earlier causal entry of the same settings keeps its other sizes (sizes built by separate
    commands merge, as the T5 build's do)."""
    manifest = json.loads(path.read_text()) if path.exists() else {}
    old = manifest.get("causal")
    if old:
        same = {k: v for k, v in old["config"].items() if k != "sizes"} == {
            k: v for k, v in entry["config"].items() if k != "sizes"
        }
        if same and old.get("corpus") == entry["corpus"]:
            models = {**old["models"], **entry["models"]}
            entry["models"] = {s: models[s] for s in SIZES if s in models}
            entry["config"]["sizes"] = list(entry["models"])
            commands = [*old.get("commands", [old.get("command")]), entry["command"]]
            entry["commands"] = [c for i, c in enumerate(commands) if c and c not in commands[:i]]
    manifest["causal"] = entry
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return entry


# --- the command ------------------------------------------------------------------------------


def add_parser(sub) -> None:
    """``build-causal``'s options (``python -m repro.toyworld build-causal --help``)."""
    c = sub.add_parser(
        "build-causal", help="the decoder-only (GPT-NeoX) ladder, pre-trained on the corpus"
    )
    c.add_argument("-o", "--out", "--out-dir", dest="out", default=str(DEFAULT_OUT))
    c.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    c.add_argument(
        "--steps",
        nargs="+",
        type=int,
        default=list(CausalBuildConfig.steps),
        help="pre-training steps to save a checkpoint at, increasing; the last is the budget",
    )
    c.add_argument("--n-docs", type=int, default=CausalBuildConfig.n_docs)
    c.add_argument("--eval-docs", type=int, default=CausalBuildConfig.eval_docs)
    c.add_argument("--probe-items", type=int, default=CausalBuildConfig.probe_items)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tokenizer", default=str(TOKENIZER_DIR), help="the T5 toys' tokenizer dir")
    c.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    c.add_argument("--jobs", type=int, default=2, help="sizes at once, a process each (default 2)")


def main(args: argparse.Namespace, command: str) -> int:
    try:
        cfg = CausalBuildConfig(
            sizes=tuple(args.sizes),
            steps=tuple(args.steps),
            seed=args.seed,
            n_docs=args.n_docs,
            eval_docs=args.eval_docs,
            probe_items=args.probe_items,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per checkpoint saved and loaded back
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    entry = build_causal(args.out, cfg, command, args.tokenizer, jobs=args.jobs)
    for size, m in entry["models"].items():
        losses = " / ".join(f"{v:.3f}" for v in m["eval_loss"].values())
        print(
            f"{size}: {m['params']:,} parameters, held-out loss {losses} at steps {list(cfg.steps)}"
        )
    print(f"built in {entry['wall_seconds']:.0f} s")
    return 0
