"""A pilot of a toy-model ladder (issue 19): how the frozen knowledge grows with model size and
pre-training steps in a candidate corpus, measured before any prompt tuning.
``python -m repro.toyworld pilot`` (docs/toy_world.md, "Toward issue 19").

It does not build or ship anything. For each candidate size it pre-trains from random init with
the build's own loop (``build.pretrain``: span corruption, T5's pre-training Adafactor, batch
32 × 128-token segments) on a corpus of the world reshaped by at most two knobs — the share of
review parts and of reading (question-answer) parts, stories taking the rest — and records the
build's probe (``probe.probe``, span-corruption form: review polarity and fact/reading, chance
50) every ``every`` steps. The tokenizer is the shipped one (every word of the world is one of
its pieces, whatever the shares). Defaults: the current world's corpus (40 / 40 / 20) and a
ladder of d_model 32 / 64 / 128 / 256, d_ff = 2.5 × d_model, 2 + 2 layers, 4 heads
(~0.07M-3.7M parameters, 1.7 orders of magnitude).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from repro.toyworld import world
from repro.toyworld.build import (
    DEFAULT_OUT,
    BuildConfig,
    ToySize,
    count_params,
    pretrain,
    span_corruption_segments,
    t5_config,
)

DEFAULT_TOKENIZER = DEFAULT_OUT / "toy_small" / "span_corruption"
DEFAULT_D_MODELS = (32, 64, 128, 256)


def share_of(kind: str) -> float:
    """The current world's share of a kind of part (``world.DOC_KINDS``)."""
    return world.DOC_KINDS[kind][1]


@dataclass(frozen=True)
class PilotConfig:
    """One pilot: a ladder, a budget and a corpus shape (recorded in the JSON)."""

    d_models: tuple[int, ...] = DEFAULT_D_MODELS
    num_layers: int = 2
    num_heads: int = 4
    ff_ratio: float = 2.5
    steps: int = 400
    every: int = 100  # probe (and loss window) every this many steps
    probe_items: int = 100
    review_share: float = share_of("review")
    qa_share: float = share_of("qa")
    n_docs: int = BuildConfig.n_docs
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.d_models or any(d < 4 or d % self.num_heads for d in self.d_models):
            raise ValueError(
                f"d_models must be multiples of num_heads={self.num_heads}, >= 4; got {list(self.d_models)}"
            )
        for name in ("steps", "every", "probe_items", "n_docs", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        shares = (self.review_share, self.qa_share)
        if any(not 0 <= s <= 1 for s in shares) or sum(shares) > 1 or sum(shares) == 0:
            raise ValueError(
                f"review_share={self.review_share}, qa_share={self.qa_share}: each in [0, 1], "
                "sum in (0, 1] (stories take the rest)"
            )

    def shares(self) -> dict[str, float]:
        return {
            "review": self.review_share,
            "qa": self.qa_share,
            "story": max(0.0, round(1.0 - self.review_share - self.qa_share, 10)),
        }

    def shape(self, d_model: int) -> ToySize:
        return ToySize(
            d_model=d_model,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            d_ff=round(self.ff_ratio * d_model),
        )


def _as_shipped(path: str | Path) -> str:
    """A tokenizer inside this repository as the repository names it (``repro/toy_models/...``),
    never the absolute path of the machine that ran the pilot; any other path as given."""
    root = Path(__file__).resolve().parents[2]
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def run(
    cfg: PilotConfig, out_dir: str | Path, tokenizer_path: str | Path = DEFAULT_TOKENIZER
) -> dict[str, Any]:
    """Pre-train and probe every size of ``cfg``; writes ``pilot.json`` and ``pilot.md``."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    docs = list(world.documents(cfg.n_docs, cfg.seed, shares=cfg.shares()))
    token_docs = tokenizer(docs, add_special_tokens=False)["input_ids"]
    # the build's own settings, but for the budget and the probe
    build_cfg = BuildConfig(
        seed=cfg.seed,
        n_docs=cfg.n_docs,
        pretrain_steps=cfg.steps,
        log_every=cfg.every,
        probe_every=cfg.every,
        probe_items=cfg.probe_items,
    )
    segments = span_corruption_segments(token_docs, build_cfg)
    sizes = []
    with tempfile.TemporaryDirectory(prefix="toyworld-pilot-") as tmp:
        log_path = Path(tmp) / "log.jsonl"
        for d in cfg.d_models:
            name = f"d{d}"
            shape = cfg.shape(d)
            params = count_params(T5ForConditionalGeneration(t5_config(shape, len(tokenizer))))
            stats = pretrain(
                name, tokenizer, segments, build_cfg, Path(tmp) / name, log_path, shape
            )
            records = [json.loads(x) for x in log_path.read_text().splitlines()]
            curve = [
                {
                    "step": r["step"],
                    "loss": round(r["loss"], 4),
                    "seconds": r["elapsed_s"],
                    **r["probe"],
                }
                for r in records
                if r["size"] == name
            ]
            sizes.append(
                {
                    "size": name,
                    "shape": asdict(shape),
                    "params": params,
                    # the first record's time holds no probe: training alone
                    "seconds_per_step": round(curve[0]["seconds"] / curve[0]["step"], 3),
                    "seconds": stats["seconds"],
                    "epochs": round(stats["epochs"], 3),
                    "curve": curve,
                }
            )
    result = {
        "what": "pilot of a toy ladder: probe (chance 50) vs size and steps; nothing shipped",
        "config": {**asdict(cfg), "d_models": list(cfg.d_models)},
        "shares": cfg.shares(),
        "segments": len(segments),
        "tokenizer": _as_shipped(tokenizer_path),
        "threads": torch.get_num_threads(),
        "sizes": sizes,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pilot.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "pilot.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The pilot as a table: one row per size and probe point."""
    s = result["shares"]
    lines = [
        f"Corpus shares: review {s['review']:g} / qa {s['qa']:g} / story {s['story']:g}; "
        f"{result['segments']:,} segments of 128 tokens; probe chance 50 "
        f"({result['config']['probe_items']} items per skill).",
        "",
        "| size | params | step | probe review | probe fact | loss | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in result["sizes"]:
        for p in size["curve"]:
            lines.append(
                f"| {size['size']} | {size['params']:,} | {p['step']} | {p['review']:.1f} | "
                f"{p['fact']:.1f} | {p['loss']:.3f} | {p['seconds']:.0f} |"
            )
    lines += [
        "",
        "Training seconds per step (first window, no probe): "
        + ", ".join(f"{x['size']} {x['seconds_per_step']:.3f}" for x in result["sizes"]),
        "",
    ]
    return "\n".join(lines)
