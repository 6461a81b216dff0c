"""What a job or a sweep will cost, from the config alone: no weights are read.

``python -m repro.run ... dry_run=true`` prints one job's estimate and exits;
``python -m repro.cost [-m] [--config-dir D --config-name N] overrides...`` expands a sweep the
way Hydra's basic sweeper does and prints every job and the total. The formulas (docs/cluster.md):

- parameters of a T5.1.1 encoder-decoder from its shape (gated-GELU FFN, relative position
  buckets in the first layer, untied LM head);
- forward FLOPs = 2 × (multiply-adds of every matmul): per encoder token the encoder's
  projections, per decoder token the decoder's and the LM head, per encoder token and decoder
  layer the cross-attention keys/values, and the attention scores/contexts (quadratic in length);
- a training step of a frozen backbone = forward + activation backward (≈ the forward again: the
  gradient must reach the prompt at the encoder's input, but no weight gradient is formed), + one
  more forward with activation checkpointing;
- LM adaptation (``repro.lm_adapt``), which jobs loading the suite's own ``step_<N>/`` need
  first (``lm_adapt_source=own``, or 10K/50K with ``auto``): once per size, one run to the
  largest step count needed (it writes every smaller one on the way), priced from
  conf/lm_adapt.yaml's defaults (batch 128, input 512 / target 512 tokens) whether or not its
  checkpoints exist already. All weights train, so a step = forward + activation backward +
  weight-gradient backward ≈ 3 × forward: FLOPs = steps × 3 × batch × forward(512, 512);
- GPU-hours = FLOPs / (peak FLOP/s × utilisation) / 3600.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import repro.toyworld  # noqa: F401  (an entry point: registers the toy world's tasks)
from repro.config import Config, CostConfig, ModelConfig, OptimizerConfig
from repro.factoring import second_moment_numel

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NUM_BUCKETS = 32  # T5's relative-attention buckets (first layer of each stack)
CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Shape:
    """The shape of a T5.1.1-style encoder-decoder (as in its config.json)."""

    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int  # encoder
    num_decoder_layers: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @property
    def inner(self) -> int:
        """Width of the attention projections: heads × d_kv."""
        return self.num_heads * self.d_kv


def shape_of(model: ModelConfig) -> Shape:
    """The backbone's shape: a local checkpoint's config.json if there is one, else the keys of
    conf/model/<size>.yaml. Raises ValueError naming what is missing."""
    if model.path and (Path(model.path).expanduser() / "config.json").exists():
        hf = json.loads((Path(model.path).expanduser() / "config.json").read_text())
        return Shape(
            d_model=hf["d_model"],
            d_kv=hf["d_kv"],
            d_ff=hf["d_ff"],
            num_heads=hf["num_heads"],
            num_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            vocab_size=hf["vocab_size"],
            tie_word_embeddings=hf.get("tie_word_embeddings", True),
        )
    keys = ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size")
    missing = [k for k in keys if getattr(model, k) is None]
    if missing:
        raise ValueError(
            f"model={model.size} has no {', '.join('model.' + k for k in missing)}: a dry run "
            "needs the T5 shape (set them, or model.path to a checkpoint with a config.json)"
        )
    return Shape(
        d_model=model.d_model,
        d_kv=model.d_kv,
        d_ff=model.d_ff,
        num_heads=model.num_heads,
        num_layers=model.num_layers,
        num_decoder_layers=model.num_layers,
        vocab_size=model.vocab_size,
        tie_word_embeddings=model.tie_word_embeddings,
    )


def count_params(s: Shape) -> int:
    """Every parameter of the encoder-decoder (embedding, both stacks, LM head)."""
    d, inner, ff = s.d_model, s.inner, s.d_ff
    attention = 4 * d * inner  # q, k, v, o
    ffn = 3 * d * ff  # gated: wi_0, wi_1, wo
    encoder_layer = attention + ffn + 2 * d  # + 2 RMS norms
    decoder_layer = 2 * attention + ffn + 3 * d  # self + cross attention, 3 norms
    bias = NUM_BUCKETS * s.num_heads  # relative position bias, first layer of each stack
    encoder = s.num_layers * encoder_layer + bias + d  # + final norm
    decoder = s.num_decoder_layers * decoder_layer + bias + d
    embeddings = s.vocab_size * d * (1 if s.tie_word_embeddings else 2)
    return encoder + decoder + embeddings


def forward_flops(s: Shape, enc_tokens: int, dec_tokens: int) -> int:
    """FLOPs of one example's forward pass (2 per multiply-add; norms, softmax ignored).

    Args:
        enc_tokens: encoder length: prompt + input tokens.
        dec_tokens: decoder length: target tokens.
    """
    d, inner, ff, te, td = s.d_model, s.inner, s.d_ff, enc_tokens, dec_tokens
    # attention scores QKᵀ and context AV: 2 × 2·length·inner per query token
    encoder = te * s.num_layers * (2 * (4 * d * inner + 3 * d * ff) + 4 * te * inner)
    decoder = (
        td
        * s.num_decoder_layers
        * (
            2 * (4 * d * inner + 2 * d * inner + 3 * d * ff)  # self q,k,v,o; cross q,o; FFN
            + 4 * td * inner  # self-attention scores + context
            + 4 * te * inner  # cross-attention scores + context
        )
    )
    cross_kv = te * s.num_decoder_layers * 2 * (2 * d * inner)  # cross k, v of encoder outputs
    lm_head = td * 2 * d * s.vocab_size
    return encoder + decoder + cross_kv + lm_head


def step_flops(
    s: Shape, batch: int, enc_tokens: int, dec_tokens: int, checkpointing: bool = False
) -> int:
    """One training step of a frozen backbone: forward + activation backward (≈ 1 forward),
    + 1 recomputed forward with activation checkpointing."""
    passes = 3 if checkpointing else 2
    return passes * batch * forward_flops(s, enc_tokens, dec_tokens)


def activation_bytes(
    s: Shape,
    micro_batch: int,
    enc_tokens: int,
    dec_tokens: int,
    bytes_per: int,
    checkpointing: bool = False,
) -> int:
    """Activations kept for backward in one micro-batch (eager attention; a rough guide, ±50%).

    Per encoder token and layer: norm in/out ×2 (4d), residual (d), q, k, v, context (4·inner),
    FFN wi_0, gelu, wi_1, product (4·d_ff), scores + probabilities (2·heads·T_enc). The decoder
    adds cross-attention (its q, context, norms, scores over T_enc) and the cross keys/values
    (2·inner per encoder token and layer). Logits stay fp32 (logits, log-softmax, gradient).
    With checkpointing only each layer's input is kept, plus one layer recomputed in backward.
    """
    d, inner, ff, h, te, td = s.d_model, s.inner, s.d_ff, s.num_heads, enc_tokens, dec_tokens
    enc_layer = te * (5 * d + 4 * inner + 4 * ff + 2 * h * te)
    dec_layer = td * (7 * d + 6 * inner + 4 * ff + 2 * h * (td + te)) + te * 2 * inner
    logits = 3 * td * s.vocab_size * 4
    if checkpointing:
        kept = (s.num_layers * te + s.num_decoder_layers * td) * d + max(enc_layer, dec_layer)
    else:
        kept = s.num_layers * enc_layer + s.num_decoder_layers * dec_layer
    return micro_batch * (kept * bytes_per + logits)


@dataclass
class JobCost:
    """The estimate for one job (all of its tasks)."""

    name: str
    tasks: tuple[str, ...]
    steps: int  # per task
    params: int
    weights_bytes: int
    prompt_state_bytes: int  # prompt + its gradient + Adafactor's second moment, fp32
    activation_bytes: int  # one micro-batch, the longest task
    flops_per_step: int  # the longest task
    total_flops: int  # every step of every task (evaluation not included)
    gpu_hours: float
    cost: CostConfig

    @property
    def memory_bytes(self) -> int:
        return self.weights_bytes + self.prompt_state_bytes + self.activation_bytes


def lengths(cfg: Config, task_name: str) -> tuple[int, int]:
    """(encoder tokens, decoder tokens) per example: prompt + input, target; the task's limits
    unless ``cost.input_len`` / ``cost.target_len`` give typical lengths."""
    from repro.tasks import get_task

    task = get_task(task_name)
    max_in = cfg.cost.input_len or cfg.task.max_input_length or task.max_input_length
    # SuperGLUE tasks size their target limit from the data at run time (no data is read here):
    # 8 tokens, the official demos' limit, stands in (label words, most entities and referents).
    max_tgt = cfg.cost.target_len or cfg.task.max_target_length or task.max_target_length or 8
    return cfg.prompt_len + max_in, max_tgt


def prompt_state_bytes(prompt_len: int, d_model: int, optimizer: OptimizerConfig) -> int:
    """fp32 prompt [p, d] + its gradient + Adafactor's second moment: p·d floats, or p + d when
    the optimiser factors it (``trainer.optimizer.factored``; auto: p ≥ 128 and d ≥ 128)."""
    shape = (prompt_len, d_model)
    v = second_moment_numel(shape, optimizer.factored, optimizer.min_dim_size_to_factor)
    return (2 * prompt_len * d_model + v) * 4


def estimate(cfg: Config) -> JobCost:
    """Parameters, memory, FLOPs and GPU-hours of one job, without loading anything."""
    from repro.tasks import task_names

    shape = shape_of(cfg.model)
    params = count_params(shape)
    tasks = task_names(cfg.task.name)
    t = cfg.trainer
    bytes_per = 2 if cfg.model.dtype != "float32" or t.bf16_autocast else 4
    checkpointing = cfg.model.gradient_checkpointing
    per_task = [lengths(cfg, name) for name in tasks]
    flops = [step_flops(shape, t.batch_size, te, td, checkpointing) for te, td in per_task]
    total = sum(f * t.steps for f in flops)
    te, td = max(per_task)
    return JobCost(
        name=cfg.name,
        tasks=tasks,
        steps=t.steps,
        params=params,
        weights_bytes=params * BYTES[cfg.model.dtype],
        prompt_state_bytes=prompt_state_bytes(cfg.prompt_len, shape.d_model, t.optimizer),
        activation_bytes=activation_bytes(
            shape, t.batch_size // t.grad_accum, te, td, bytes_per, checkpointing
        ),
        flops_per_step=max(flops),
        total_flops=total,
        gpu_hours=gpu_hours(total, cfg.cost),
        cost=cfg.cost,
    )


def gpu_hours(flops: float, cost: CostConfig) -> float:
    return flops / (cost.peak_tflops * 1e12 * cost.utilisation) / 3600


@dataclass
class AdaptationCost:
    """The ``repro.lm_adapt`` run one size needs before its jobs can load ``step_<N>/``."""

    size: str
    steps: int  # the largest step count needed: one run writes every smaller one on the way
    needed: tuple[int, ...]  # the step counts the jobs load
    batch_size: int
    input_len: int
    target_len: int
    params: int
    flops_per_step: int
    total_flops: int
    gpu_hours: float
    cost: CostConfig


def lm_adapt_defaults() -> dict:
    """The ``lm_adapt:`` node of conf/lm_adapt.yaml (what ``python -m repro.lm_adapt`` runs)."""
    import yaml

    return yaml.safe_load((CONF / "lm_adapt.yaml").read_text())["lm_adapt"]


def adaptation_costs(configs: Sequence[Config]) -> list[AdaptationCost]:
    """The LM adaptation a sweep's jobs need, once per size (``repro.run.own_lm_adapt_steps``:
    jobs with ``lm_adapt_source=own``, or at 10K/50K): one run to the largest step count,
    all weights trained, 3 × forward FLOPs per example (module docstring)."""
    from repro.config import own_lm_adapt_steps

    needed: dict[str, tuple[Config, set[int]]] = {}
    for cfg in configs:
        steps = own_lm_adapt_steps(cfg)
        if steps is not None:
            needed.setdefault(cfg.model.size, (cfg, set()))[1].add(steps)
    defaults = lm_adapt_defaults()
    batch, t_in, t_out = (defaults[k] for k in ("batch_size", "input_length", "target_length"))
    out = []
    for size, (cfg, steps) in needed.items():
        shape = shape_of(cfg.model)
        per_step = 3 * batch * forward_flops(shape, t_in, t_out)
        total = max(steps) * per_step
        out.append(
            AdaptationCost(
                size=size,
                steps=max(steps),
                needed=tuple(sorted(steps)),
                batch_size=batch,
                input_len=t_in,
                target_len=t_out,
                params=count_params(shape),
                flops_per_step=per_step,
                total_flops=total,
                gpu_hours=gpu_hours(total, cfg.cost),
                cost=cfg.cost,
            )
        )
    return out


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.3f} MB"


def describe(job: JobCost) -> str:
    """One line per job: what ``dry_run=true`` prints."""
    c = job.cost
    return (
        f"dry run {job.name}: {len(job.tasks)} task(s) × {job.steps} steps | "
        f"params {job.params:,} | memory ≈ {_gb(job.memory_bytes)} "
        f"(weights {_gb(job.weights_bytes)}, activations {_gb(job.activation_bytes)}/micro-batch)"
        f" | {job.flops_per_step:.3e} FLOP/step | {job.total_flops:.3e} FLOP | "
        f"{job.gpu_hours:.2f} GPU-h at {c.utilisation:.0%} of {c.peak_tflops:g} TFLOP/s ({c.gpu})"
    )


def describe_adaptation(a: AdaptationCost) -> str:
    """One line per size whose jobs need the suite's own LM adaptation first."""
    c = a.cost
    return (
        f"lm adaptation {a.size}: 1 run of {a.steps} steps "
        f"(writes step_{{{','.join(map(str, a.needed))}}}) | batch {a.batch_size} × "
        f"{a.input_len}/{a.target_len} tokens, all {a.params:,} weights trained | "
        f"{a.flops_per_step:.3e} FLOP/step | {a.total_flops:.3e} FLOP | "
        f"{a.gpu_hours:.2f} GPU-h at {c.utilisation:.0%} of {c.peak_tflops:g} TFLOP/s ({c.gpu})"
    )


def describe_total(jobs: Sequence[JobCost], adaptations: Sequence[AdaptationCost] = ()) -> str:
    """The sum over the jobs and the LM adaptation they need."""
    flops = sum(j.total_flops for j in jobs) + sum(a.total_flops for a in adaptations)
    hours = sum(j.gpu_hours for j in jobs) + sum(a.gpu_hours for a in adaptations)
    peak = max((j.memory_bytes for j in jobs), default=0)
    adapt = f" + LM adaptation of {len(adaptations)} size(s)" if adaptations else ""
    return (
        f"total: {len(jobs)} job(s){adapt} | {flops:.3e} FLOP | {hours:.2f} GPU-h | "
        f"largest job memory ≈ {_gb(peak)}"
    )


# --- the sweep CLI ----------------------------------------------------------------------------


def sweep_configs(
    overrides: Sequence[str],
    *,
    multirun: bool = False,
    config_dir: str | None = None,
    config_name: str = "config",
) -> list[Config]:
    """The validated config of every job ``python -m repro.run [-m] ...`` would launch, in order
    (the config's ``hydra.sweeper.params`` first, then the command line, as Hydra's basic
    sweeper expands them)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    import repro.rundir  # noqa: F401  (registers the run_name resolver)
    from repro.config import register_configs, to_config

    register_configs()

    primary = Path(config_dir).resolve() if config_dir else CONF
    search = [f"hydra.searchpath=[file://{CONF}]"] if config_dir else []
    with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
        if multirun:
            base = compose(config_name, overrides=search, return_hydra_config=True)
            params = base.hydra.sweeper.params or {}
            args = [f"{k}={v}" for k, v in params.items()] + list(overrides)
            parsed = OverridesParser.create().parse_overrides(args)
            (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
        else:
            jobs = [list(overrides)]
        configs = []
        for job in jobs:
            cfg = compose(config_name, overrides=[*search, *job], return_hydra_config=True)
            with open_dict(cfg):
                del cfg["hydra"]
            configs.append(to_config(cfg))
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.cost",
        description="Per-job and total cost of `python -m repro.run [-m] overrides...` "
        "(parameters, memory, FLOPs, GPU-hours); loads no weights.",
    )
    parser.add_argument("-m", "--multirun", action="store_true", help="expand a sweep")
    parser.add_argument("--config-dir", "-cd", default=None)
    parser.add_argument("--config-name", "-cn", default="config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    from repro.cli import cli_error_message

    try:
        configs = sweep_configs(
            args.overrides,
            multirun=args.multirun,
            config_dir=args.config_dir,
            config_name=args.config_name,
        )
        jobs = [estimate(cfg) for cfg in configs]
        adaptations = adaptation_costs(configs)
    except Exception as err:
        message = cli_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    for job in jobs:
        print(describe(job))
    for adaptation in adaptations:
        print(describe_adaptation(adaptation))
    print(describe_total(jobs, adaptations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
