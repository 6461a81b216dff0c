"""Build the toy world's checkpoints: corpus → tokenizer → span-corruption pre-training of a
ladder of T5.1.1-shaped models → LM adaptation (``repro.lm_adapt``) → small fp16 checkpoints and
a manifest. ``python -m repro.toyworld build`` runs all of it (docs/toy_world.md).

Layout of the output directory (default ``repro/toy_models/``)::

    manifest.json                    how everything was made, param counts, the rebuild command
    <size>/span_corruption/          pre-trained only (T5.1.1's analogue)
    <size>/step_<N>/                 LM-adapted for N steps (repro.lm_adapt's layout, so that
                                     paths.lm_adapt_dir=<out> serves objective=lm_adapt lm_adapt_steps=N)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repro.config import ModelConfig, PathsConfig
from repro.lm_adapt.config import LMAdaptConfig, LMAdaptRun, output_dir
from repro.lm_adapt.train import lm_adapt
from repro.lm_adapt.train import versions as lm_adapt_versions
from repro.tiny import tiny_t5_config
from repro.toyworld import world
from repro.toyworld.probe import in_corpus, probe
from repro.toyworld.span_corruption import span_corruption

log = logging.getLogger("repro.toyworld")

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "toy_models"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ToySize:
    """Shape of one rung of the ladder (T5.1.1: gated-GELU, relative attention)."""

    d_model: int
    num_layers: int  # encoder layers = decoder layers
    num_heads: int
    d_ff: int


# A ladder of 4 rungs, d_model doubling (~3.5x in parameters a rung, as T5's sizes), 23,872 to
# 963,328 parameters: 1.6 orders of magnitude (issue 19). The largest stays small enough that
# prompt tuning it with a 150-token prompt takes well under a minute on one CPU core.
SIZES: dict[str, ToySize] = {
    "toy_small": ToySize(d_model=16, num_layers=2, num_heads=4, d_ff=40),
    "toy_base": ToySize(d_model=32, num_layers=2, num_heads=4, d_ff=80),
    "toy_large": ToySize(d_model=64, num_layers=2, num_heads=4, d_ff=160),
    "toy_xl": ToySize(d_model=128, num_layers=2, num_heads=4, d_ff=320),
}


@dataclass
class BuildConfig:
    """Everything that decides the shipped checkpoints (recorded in the manifest)."""

    sizes: tuple[str, ...] = tuple(SIZES)
    seed: int = 0
    n_docs: int = 100_000  # pre-training corpus (a separate seeded corpus feeds LM adaptation)
    n_lm_docs: int = 20_000
    vocab_size: int = 500  # SentencePiece pieces, before the 100 sentinels
    # span corruption: raw segments of `segment_length` tokens → inputs ≈ 115, targets ≈ 26;
    # long enough that a 100-150 token prompt + a task input is not far beyond what the model saw
    segment_length: int = 128
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    pretrain_steps: int = 5000
    pretrain_batch_size: int = 32
    # LM adaptation: steps at 1/10, 1/2 and 1 of the longest, as the paper's 10K/50K/100K
    lm_adapt_steps: tuple[int, ...] = (50, 250, 500)
    lm_adapt_batch_size: int = 16
    lm_adapt_length: int = 128  # input_length = target_length (nothing cut, docs/lm_adapt.md)
    save_dtype: str = "float16"  # halves the shipped size; loading casts to model.dtype
    log_every: int = 50
    probe_every: int = 250  # zero-shot probe of the tasks' skills during pre-training (probe.py)
    probe_items: int = 200  # per skill; in-corpus probe: this many segments

    def __post_init__(self) -> None:
        unknown = [s for s in self.sizes if s not in SIZES]
        if unknown or not self.sizes:
            raise ValueError(f"unknown toy size(s) {unknown}; allowed: {', '.join(SIZES)}")
        steps = list(self.lm_adapt_steps)
        if not steps or any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] < 1:
            raise ValueError(f"lm_adapt_steps must be positive and increasing; got {steps}")
        if self.pretrain_steps < 1:
            raise ValueError(f"pretrain_steps must be >= 1; got {self.pretrain_steps}")
        if self.probe_items < 1:
            raise ValueError(f"probe_items must be >= 1; got {self.probe_items}")
        if self.save_dtype not in ("float16", "bfloat16", "float32"):
            raise ValueError(f"save_dtype={self.save_dtype!r}; allowed: float16, bfloat16, float32")


def t5_config(shape: ToySize, vocab_size: int):
    """A T5.1.1 config for one rung (no dropout: T5.1.1 was pre-trained without it).

    ``tie_word_embeddings=False`` is how transformers 5 says "T5.1.1": it keeps the decoder
    output unscaled (``scale_decoder_outputs=False``) but still ties the LM head to the input
    embedding, so the parameter count holds one [vocab, d_model] table, not two.
    """
    return tiny_t5_config(
        vocab_size, shape.d_model, shape.num_layers, shape.num_heads, d_ff=shape.d_ff
    )


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- corpus and tokenizer ---------------------------------------------------------------------


def write_corpus(path: Path, n_docs: int, seed: int) -> str:
    """Write ``n_docs`` documents, one a line; returns the file's sha256."""
    text = "".join(f"{d}\n" for d in world.documents(n_docs, seed))
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def train_tokenizer(corpus: Path, out_dir: Path, vocab_size: int, seed: int = 0):
    """A SentencePiece model of the corpus, saved as a T5 tokenizer (pad 0, eos 1, unk 2,
    100 ``<extra_id_*>`` sentinels at the top of the vocabulary).

    BPE, not T5's unigram: the toy corpus has only ~130 word types, on which SentencePiece's
    unigram trainer collapses to ~200 sub-word pieces ("the film" → ▁/the/▁fi/lm); BPE keeps
    every word whole and fills the vocabulary with the most frequent merges. transformers
    turns any SentencePiece model into a *unigram* tokenizer that picks the segmentation with
    the highest sum of piece scores, and a BPE model's scores are its merge ranks, so it would
    split a word whose whole piece was merged late ("the" → ▁t/he, "yes" → ▁y/es). Every
    piece therefore gets the same score: the fewest pieces win, which for every word of the
    world is the word itself — what SentencePiece's own BPE encoder gives.
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = corpus.read_text(encoding="utf-8").splitlines()[:20_000]
    # every character a user might type, so that little of it becomes <unk>
    lines.append(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,:;?!'\"*-@()<>/_"
    )
    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=f"{tmp}/spiece",
            vocab_size=vocab_size,
            model_type="bpe",
            hard_vocab_limit=False,
            character_coverage=1.0,
            # the corpus is plain lower-case ASCII: no NFKC table (it would add ~250 KB to every
            # shipped tokenizer.json)
            normalization_rule_name="identity",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=1,
            minloglevel=2,
        )
        T5Tokenizer.from_pretrained(tmp, extra_ids=100).save_pretrained(f"{tmp}/hf")
        path = Path(tmp) / "hf" / "tokenizer.json"
        spec = json.loads(path.read_text(encoding="utf-8"))
        if spec["model"]["type"] != "Unigram":
            raise RuntimeError(f"expected a Unigram tokenizer.json, got {spec['model']['type']}")
        spec["model"]["vocab"] = [[piece, -1.0] for piece, _ in spec["model"]["vocab"]]
        path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        tokenizer = T5Tokenizer.from_pretrained(f"{tmp}/hf")
    tokenizer.save_pretrained(out_dir)
    return tokenizer


# --- span-corruption pre-training -------------------------------------------------------------


def span_corruption_segments(token_docs: list[list[int]], cfg: BuildConfig) -> np.ndarray:
    """Concatenate the tokenised documents (as T5 does) and cut raw segments [N, L]."""
    stream = np.fromiter((t for doc in token_docs for t in doc), dtype=np.int64)
    n = len(stream) // cfg.segment_length
    return stream[: n * cfg.segment_length].reshape(n, cfg.segment_length)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def pretrain(
    size: str,
    tokenizer,
    segments: np.ndarray,
    cfg: BuildConfig,
    out_dir: Path,
    log_path: Path,
    shape: ToySize | None = None,
) -> dict[str, Any]:
    """Pre-train one rung from random init on span corruption; save fp32 to ``out_dir``.

    ``shape`` overrides ``SIZES[size]`` (the pilot's ladder, pilot.py); ``size`` then only
    names the rung in the log.

    Optimizer: T5's pre-training Adafactor (inverse-square-root schedule = HF relative_step,
    parameter scaling on, no momentum, no weight decay). Each segment's noise depends only on
    ``(seed, epoch, segment index)``.
    """
    from transformers import T5ForConditionalGeneration
    from transformers.optimization import Adafactor

    torch.manual_seed(cfg.seed)
    model = T5ForConditionalGeneration(t5_config(shape or SIZES[size], len(tokenizer)))
    model.train()
    optimizer = Adafactor(
        model.parameters(), lr=None, scale_parameter=True, relative_step=True, warmup_init=False
    )
    order_rng = np.random.default_rng([cfg.seed, 0])
    order, epoch, cursor = order_rng.permutation(len(segments)), 0, 0
    losses, start = [], time.time()
    with log_path.open("a") as logf:
        for step in range(1, cfg.pretrain_steps + 1):
            # batch: the next segments of this epoch's order, corrupted
            inputs, targets = [], []
            for _ in range(cfg.pretrain_batch_size):
                if cursor == len(order):
                    epoch, cursor = epoch + 1, 0
                    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(segments))
                i = int(order[cursor])
                cursor += 1
                rng = np.random.default_rng([cfg.seed, epoch, i])
                x, y = span_corruption(
                    segments[i].tolist(),
                    rng,
                    vocab_size=len(tokenizer),
                    eos_id=tokenizer.eos_token_id,
                    noise_density=cfg.noise_density,
                    mean_noise_span_length=cfg.mean_noise_span_length,
                )
                inputs.append(x)
                targets.append(y)
            input_ids = _pad(inputs, tokenizer.pad_token_id)
            labels = _pad(targets, IGNORE_INDEX)
            # forward/backward/step: mean cross-entropy over target tokens
            logits = model(
                input_ids=input_ids,
                attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                labels=labels,
            ).logits
            loss = F.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            # log
            if step % cfg.log_every == 0 or step == cfg.pretrain_steps:
                record = {
                    "size": size,
                    "stage": "span_corruption",
                    "step": step,
                    "loss": sum(losses[-cfg.log_every :]) / len(losses[-cfg.log_every :]),
                    "elapsed_s": round(time.time() - start, 1),
                }
                if step % cfg.probe_every == 0 or step == cfg.pretrain_steps:
                    record["probe"] = probe(model, tokenizer, "span_corruption", cfg.probe_items)
                logf.write(json.dumps(record) + "\n")
                logf.flush()
                log.info("%s", record)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    window = losses[-cfg.log_every :]
    return {
        "final_loss": sum(window) / len(window),
        "epochs": epoch + cursor / len(order),
        "seconds": round(time.time() - start, 1),
    }


def probe_checkpoint(path: Path, style: str, n: int) -> dict[str, Any]:
    """The zero-shot probe (probe.py) of a saved checkpoint, as it ships; a span-corruption
    checkpoint also gets its label-word accuracy on masked corpus text (``in_corpus``)."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    scores: dict[str, Any] = probe(model, tokenizer, style, n)
    if style == "span_corruption":
        scores["in_corpus"] = in_corpus(model, tokenizer, n)
    return scores


# --- LM adaptation through repro.lm_adapt ------------------------------------------------------


def lm_adapt_size(size: str, source: Path, corpus: Path, work: Path, cfg: BuildConfig) -> Path:
    """Run ``repro.lm_adapt`` from ``source``; returns ``<work>/<size>`` holding ``step_<N>/``."""
    run = LMAdaptRun(
        model=ModelConfig(size=size, path=str(source), dropout=0.0),
        paths=PathsConfig(root=str(work), cache_dir=str(work), lm_adapt_dir=str(work)),
        lm_adapt=LMAdaptConfig(
            steps=list(cfg.lm_adapt_steps),
            corpus=str(corpus),
            input_length=cfg.lm_adapt_length,
            target_length=cfg.lm_adapt_length,
            batch_size=cfg.lm_adapt_batch_size,
            warmup_steps=10_000,  # T5's: lr = 0.01 throughout these few steps
            seed=cfg.seed,
            save_every=max(cfg.lm_adapt_steps),
            log_every=cfg.log_every,
            progress=False,
            device="cpu",
        ),
    )
    lm_adapt(run)
    return output_dir(run)


# --- shipping ---------------------------------------------------------------------------------


def export(src: Path, dst: Path, dtype: str) -> int:
    """Copy a checkpoint with its weights cast to ``dtype``; returns its parameter count."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
    n = count_params(model)
    if dst.exists():
        shutil.rmtree(dst)
    model.to(getattr(torch, dtype)).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return n


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict[str, str]:
    import sentencepiece

    return {**lm_adapt_versions(), "sentencepiece": sentencepiece.__version__}


def build(
    out_dir: str | Path = DEFAULT_OUT, cfg: BuildConfig | None = None, command: str | None = None
) -> dict[str, Any]:
    """Build every toy checkpoint into ``out_dir`` and write ``manifest.json``; returns it."""
    cfg = cfg or BuildConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="toyworld-") as tmp:
        work = Path(tmp)
        corpus, lm_corpus = work / "corpus.txt", work / "lm_corpus.txt"
        corpus_sha = write_corpus(corpus, cfg.n_docs, cfg.seed)
        # LM adaptation reads other documents of the same world (T5: C4 again, new text)
        lm_sha = write_corpus(lm_corpus, cfg.n_lm_docs, cfg.seed + 1)
        tokenizer = train_tokenizer(corpus, work / "tokenizer", cfg.vocab_size, cfg.seed)
        docs = corpus.read_text(encoding="utf-8").splitlines()
        token_docs = tokenizer(docs, add_special_tokens=False)["input_ids"]
        segments = span_corruption_segments(token_docs, cfg)
        log_path = out_dir / f"train_log_{'_'.join(cfg.sizes)}.jsonl"
        log_path.unlink(missing_ok=True)
        models = {}
        for size in cfg.sizes:
            pre = work / "pretrain" / size
            stats = pretrain(size, tokenizer, segments, cfg, pre, log_path)
            adapted = lm_adapt_size(size, pre, lm_corpus, work / "lm_adapt", cfg)
            with (adapted / "metrics.jsonl").open() as f, log_path.open("a") as logf:
                for line in f:
                    logf.write(
                        json.dumps({"size": size, "stage": "lm_adapt", **json.loads(line)}) + "\n"
                    )
            checkpoints = {"span_corruption": f"{size}/span_corruption"}
            params = export(pre, out_dir / size / "span_corruption", cfg.save_dtype)
            probes = {
                "span_corruption": probe_checkpoint(
                    out_dir / size / "span_corruption", "span_corruption", cfg.probe_items
                )
            }
            for n in cfg.lm_adapt_steps:
                export(adapted / f"step_{n}", out_dir / size / f"step_{n}", cfg.save_dtype)
                checkpoints[f"lm_adapt_{n}"] = f"{size}/step_{n}"
                probes[f"lm_adapt_{n}"] = probe_checkpoint(
                    out_dir / size / f"step_{n}", "prefix_lm", cfg.probe_items
                )
            # repro.lm_adapt's own manifest, with our temporary paths replaced by what they were
            for n in cfg.lm_adapt_steps:
                m = json.loads((adapted / f"step_{n}" / "manifest.json").read_text())
                m.update(
                    source=f"{size}/span_corruption",
                    corpus=f"toy world corpus, seed {cfg.seed + 1}",
                )
                (out_dir / size / f"step_{n}" / "manifest.json").write_text(json.dumps(m, indent=1))
            models[size] = {
                "shape": asdict(SIZES[size]),
                "params": params,
                "pretrain": stats,
                "checkpoints": checkpoints,
                # zero-shot accuracy (%) on the tasks' two skills, chance 50 (probe.py)
                "probe": probes,
            }
    manifest = {
        "what": "the toy world's T5.1.1-shaped checkpoints (docs/toy_world.md)",
        "command": command or "python -m repro.toyworld build",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "corpus": {
            "licence": "generated by repro.toyworld.world (no external text)",
            "pretrain_docs": cfg.n_docs,
            "pretrain_sha256": corpus_sha,
            "pretrain_segments": len(segments),
            "lm_adapt_docs": cfg.n_lm_docs,
            "lm_adapt_sha256": lm_sha,
        },
        "tokenizer": {"pieces": cfg.vocab_size, "vocab_size": len(tokenizer), "sentinels": 100},
        "objectives": {
            "span_corruption": {
                "noise_density": cfg.noise_density,
                "mean_noise_span_length": cfg.mean_noise_span_length,
                "steps": cfg.pretrain_steps,
                "batch_size": cfg.pretrain_batch_size,
                "segment_length": cfg.segment_length,
                "optimizer": "HF Adafactor, relative_step (lr = min(0.01, 1/sqrt(step))), scale_parameter",
            },
            "lm_adapt": {
                "steps": list(cfg.lm_adapt_steps),
                "batch_size": cfg.lm_adapt_batch_size,
                "input_length": cfg.lm_adapt_length,
                "target_length": cfg.lm_adapt_length,
                "by": "repro.lm_adapt.lm_adapt (prefix LM, T5 Adafactor, warmup 10000)",
            },
        },
        "save_dtype": cfg.save_dtype,
        "models": models,
        "git_commit": git_commit(),
        "versions": versions(),
    }
    manifest = _merge_manifest(out_dir / "manifest.json", manifest)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _merge_manifest(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """Keep the other sizes of an existing manifest made with the same settings, so that sizes
    can be built by separate processes (``--sizes toy_large`` next to ``--sizes toy_small``),
    and always the causal ladder's entry (``build-causal``: checkpoints a T5 rebuild keeps)."""
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    if "causal" in old:
        new.setdefault("causal", old["causal"])
    same = {k: v for k, v in old.get("config", {}).items() if k != "sizes"} == {
        k: v for k, v in new["config"].items() if k != "sizes"
    }
    if not same or old.get("corpus") != new["corpus"]:
        return new
    models = {**old.get("models", {}), **new["models"]}
    order = [s for s in SIZES if s in models]
    new["models"] = {s: models[s] for s in order}
    new["config"]["sizes"] = order
    commands = [*old.get("commands", [old.get("command")]), new["command"]]
    new["commands"] = [c for i, c in enumerate(commands) if c and c not in commands[:i]]
    return new
