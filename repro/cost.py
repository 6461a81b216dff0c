"""What a job or a sweep will cost, from the config alone: no weights are read.

``python -m repro.run ... dry_run=true`` prints one job's estimate and exits;
``python -m repro.cost [-m] [--config-dir D --config-name N] overrides...`` expands a sweep the
way Hydra's basic sweeper does and prints one line per group of jobs that cost the same (by
model size, then the sweep's other axes that change the cost), a subtotal per size and the total
(``--jobs``: one line per job). The formulas (docs/cluster.md):

- parameters of a T5.1.1 encoder-decoder from its shape (gated-GELU FFN, relative position
  buckets in the first layer, untied LM head);
- forward FLOPs = 2 × (multiply-adds of every matmul): per encoder token the encoder's
  projections, per decoder token the decoder's and the LM head, per encoder token and decoder
  layer the cross-attention keys/values, and the attention scores/contexts (quadratic in length);
- a training step of a frozen backbone = forward + activation backward (≈ the forward again: the
  gradient must reach the prompt at the encoder's input, but no weight gradient is formed), + one
  more forward with activation checkpointing;
- model tuning (``method=model`` / ``model_multitask``, ``repro.methods``) trains every weight:
  a step = forward + activation backward + weight-gradient backward ≈ 3 forwards (+1 with
  checkpointing); its memory adds a gradient per weight and Adafactor's second moments of every
  tensor (fp32, factored by t5x's rule: row + column means for a matrix with both dims ≥ 128);
  ``best/`` and ``last/`` each hold a full copy of the weights (``last/`` also the optimizer
  state) per task, or one for a mixture. A mixture (``model_multitask``) is one run of
  ``trainer.steps`` steps over all its tasks, priced at its longest task;
- LM adaptation (``repro.lm_adapt``), which jobs loading the suite's own ``step_<N>/`` need
  first (``lm_adapt_source=own``, or 10K/50K with ``auto``): once per size, one run to the
  largest step count needed (it writes every smaller one on the way), priced from
  conf/lm_adapt.yaml's defaults (batch 128, input 512 / target 512 tokens) whether or not its
  checkpoints exist already. All weights train, so a step = forward + activation backward +
  weight-gradient backward ≈ 3 × forward: FLOPs = steps × 3 × batch × forward(512, 512);
- GPU-hours = FLOPs / (peak FLOP/s × utilisation) / 3600;
- a job whose memory exceeds ``cost.gpu_memory_gb`` is flagged with the smallest sets of memory
  switches that make it fit, found by re-estimating the job with each (:func:`memory_fixes`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path

from repro.config import (
    CONF_DIR,
    DEVICE_MAP_STRATEGIES,
    Config,
    CostConfig,
    ModelConfig,
    OptimizerConfig,
    divisors,
)
from repro.factoring import second_moment_numel
from repro.methods import check_tasks, get_method

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NUM_BUCKETS = 32  # T5's relative-attention buckets (first layer of each stack)


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


def param_shapes(s: Shape) -> list[tuple[int, ...]]:
    """The shape of every weight tensor, as transformers' T5 holds them (what ``count_params``
    sums; what Adafactor keeps a second moment of, tensor by tensor)."""
    d, inner, ff = s.d_model, s.inner, s.d_ff
    attention = [(inner, d)] * 3 + [(d, inner)]  # q, k, v [out, in]; o
    ffn = [(ff, d), (ff, d), (d, ff)]  # wi_0, wi_1, wo
    encoder_layer = [*attention, *ffn, (d,), (d,)]
    decoder_layer = [*attention, *attention, *ffn, (d,), (d,), (d,)]
    bias = [(NUM_BUCKETS, s.num_heads)]
    shapes = [(s.vocab_size, d)] * (1 if s.tie_word_embeddings else 2)
    shapes += [*encoder_layer] * s.num_layers + bias + [(d,)]
    shapes += [*decoder_layer] * s.num_decoder_layers + bias + [(d,)]
    return shapes


def lora_shapes(s: Shape, targets, r: int) -> list[tuple[int, int]]:
    """The LoRA matrices peft adds (``method=lora``): A [r, in] and B [out, r] beside every
    linear layer named in ``targets`` (T5's q, k, v, o of each attention, wi / wi_0 / wi_1 / wo
    of each feed-forward; T5.1.1's is gated, so ``wi`` matches none)."""
    d, inner, ff = s.d_model, s.inner, s.d_ff
    io = {"q": (d, inner), "k": (d, inner), "v": (d, inner), "o": (inner, d)}
    ffn = {"wi_0": (d, ff), "wi_1": (d, ff), "wo": (ff, d)}
    attentions = s.num_layers + 2 * s.num_decoder_layers  # encoder self; decoder self + cross
    ffns = s.num_layers + s.num_decoder_layers
    shapes = []
    for name in targets:
        if name in io:
            n, (fan_in, fan_out) = attentions, io[name]
        elif name in ffn:
            n, (fan_in, fan_out) = ffns, ffn[name]
        else:
            continue
        shapes += [(r, fan_in), (fan_out, r)] * n
    return shapes


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
    s: Shape,
    batch: int,
    enc_tokens: int,
    dec_tokens: int,
    checkpointing: bool = False,
    weight_grads: bool = False,
) -> int:
    """One training step: forward + activation backward (≈ 1 forward), + weight-gradient
    backward (≈ 1 forward) when every weight is trained, + 1 recomputed forward with activation
    checkpointing."""
    passes = 2 + int(weight_grads) + int(checkpointing)
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
    size: str  # model.size
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
    config: Config | None = field(default=None, repr=False, compare=False)  # to re-estimate
    method: str = "prompt"  # repro.methods
    # model tuning: a gradient per weight + Adafactor's second moments of every tensor (fp32)
    tuned_state_bytes: int = 0
    saved_bytes: int = 0  # what best/ and last/ hold on disk at the end (every task)
    trainable_params: int = 0  # the prompt, the LoRA matrices, or every weight

    @property
    def memory_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.prompt_state_bytes
            + self.tuned_state_bytes
            + self.activation_bytes
        )


def lengths(cfg: Config, task_name: str) -> tuple[int, int]:
    """(encoder tokens, decoder tokens) per example: prompt + input, target; the task's limits
    unless ``cost.input_len`` / ``cost.target_len`` give typical lengths."""
    from repro.tasks import get_task

    task = get_task(task_name)
    max_in = cfg.cost.input_len or cfg.task.max_input_length or task.max_input_length
    # SuperGLUE tasks size their target limit from the data at run time (no data is read here):
    # 8 tokens, the official demos' limit, stands in (label words, most entities and referents).
    max_tgt = cfg.cost.target_len or cfg.task.max_target_length or task.max_target_length or 8
    prompt = cfg.prompt_len if get_method(cfg.method.name).trains == "prompt" else 0
    return prompt + max_in, max_tgt


def adafactor_state_floats(shapes, optimizer: OptimizerConfig) -> int:
    """Floats of Adafactor's second moments over tensors of ``shapes`` (factored by
    ``trainer.optimizer.factored``; auto: t5x's rule)."""
    return sum(
        second_moment_numel(shape, optimizer.factored, optimizer.min_dim_size_to_factor)
        for shape in shapes
    )


def prompt_state_bytes(prompt_len: int, d_model: int, optimizer: OptimizerConfig) -> int:
    """fp32 prompt [p, d] + its gradient + Adafactor's second moment: p·d floats, or p + d when
    the optimiser factors it (``trainer.optimizer.factored``; auto: p ≥ 128 and d ≥ 128)."""
    shape = (prompt_len, d_model)
    v = second_moment_numel(shape, optimizer.factored, optimizer.min_dim_size_to_factor)
    return (2 * prompt_len * d_model + v) * 4


def estimate(cfg: Config) -> JobCost:
    """Parameters, memory, FLOPs and GPU-hours of one job, without loading anything."""
    from repro.tasks import MIXTURES, task_names

    shape = shape_of(cfg.model)
    params = count_params(shape)
    tasks = task_names(cfg.task.name)
    check_tasks(cfg.method.name, cfg.task.name, tasks, MIXTURES)
    method = get_method(cfg.method.name)
    t = cfg.trainer
    bytes_per = 2 if cfg.model.dtype != "float32" or t.bf16_autocast else 4
    checkpointing = cfg.model.gradient_checkpointing
    tuned = method.trains == "backbone"
    per_task = [lengths(cfg, name) for name in tasks]
    flops = [
        step_flops(shape, t.batch_size, te, td, checkpointing, weight_grads=tuned)
        for te, td in per_task
    ]
    # one run over the mixture (priced at its longest task), or one run per task
    total = max(flops) * t.steps if method.mixture else sum(f * t.steps for f in flops)
    te, td = max(per_task)
    weight_bytes = params * BYTES[cfg.model.dtype]
    prompt_bytes = prompt_state_bytes(cfg.prompt_len, shape.d_model, t.optimizer)
    copies = 1 if method.mixture else len(tasks)  # what is saved: per task, or one model
    if tuned:
        adafactor = adafactor_state_floats(param_shapes(shape), t.optimizer) * 4
        tuned_bytes, prompt_bytes = weight_bytes + adafactor, 0  # gradients + second moments
        saved = copies * (2 * weight_bytes + adafactor)  # best/ + last/ (+ its optimizer)
        trainable = params
    elif method.trains == "lora":  # fp32 A, B + gradients + Adafactor moments; no prompt
        shapes = lora_shapes(shape, cfg.method.target_modules, cfg.method.r)
        trainable = sum(a * b for a, b in shapes)
        moments = adafactor_state_floats(shapes, t.optimizer) * 4
        tuned_bytes, prompt_bytes = 2 * 4 * trainable + moments, 0
        saved = copies * (2 * 4 * trainable + moments)  # best/ + last/ adapters, last/'s moments
    else:  # best/ and last/ each hold the prompt, last/ its second moment: prompt_state_bytes
        tuned_bytes, saved = 0, copies * prompt_bytes
        trainable = cfg.prompt_len * shape.d_model
    return JobCost(
        name=cfg.name,
        size=cfg.model.size,
        tasks=tasks,
        steps=t.steps,
        params=params,
        weights_bytes=weight_bytes,
        prompt_state_bytes=prompt_bytes,
        activation_bytes=activation_bytes(
            shape, t.batch_size // t.grad_accum, te, td, bytes_per, checkpointing
        ),
        flops_per_step=max(flops),
        total_flops=total,
        gpu_hours=gpu_hours(total, cfg.cost),
        cost=cfg.cost,
        config=cfg,
        method=method.name,
        tuned_state_bytes=tuned_bytes,
        saved_bytes=saved,
        trainable_params=trainable,
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

    return yaml.safe_load((CONF_DIR / "lm_adapt.yaml").read_text())["lm_adapt"]


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


# --- does a job fit its GPU? -----------------------------------------------------------------

MAX_GPUS = 8  # model.device_map spreads a job over the GPUs of one machine


def memory_per_gpu(job: JobCost, gpus: int = 1) -> int:
    """Bytes on the fullest GPU when ``model.device_map`` spreads the job's layers over ``gpus``
    GPUs: weights and activations split evenly (accelerate's balanced map; layer granularity
    ignored), the prompt state whole on one of them. ``gpus=1``: the job's memory."""
    spread = job.weights_bytes + job.tuned_state_bytes + job.activation_bytes
    return -(-spread // gpus) + job.prompt_state_bytes


def _fits(job: JobCost, gpus: int) -> bool:
    return memory_per_gpu(job, gpus) <= job.cost.gpu_memory_gb * 1e9


def gpus_needed(job: JobCost) -> int | None:
    """The fewest GPUs of ``cost.gpu_memory_gb`` that hold the job: 1, or up to MAX_GPUS when
    its ``model.device_map`` spreads it (auto, balanced, ...); None if it does not fit."""
    spread = job.config is not None and job.config.model.device_map in DEVICE_MAP_STRATEGIES
    return next((k for k in range(1, MAX_GPUS + 1 if spread else 2) if _fits(job, k)), None)


def auto_grad_accum(cfg: Config) -> int:
    """``trainer.grad_accum=auto``: the fewest micro-batches (a divisor of
    ``trainer.batch_size``) with which the job's estimate fits ``cost.gpu_memory_gb`` on the
    GPUs its ``model.device_map`` may use (:func:`gpus_needed`); one example per micro-batch if
    none does (:func:`memory_warning` then names the switches that would make it fit); 1 if
    there is no estimate (a model of unknown shape, a task not registered here: what the run
    then reports itself). Same FLOPs and the same gradient whatever the count."""
    t = cfg.trainer
    counts = divisors(t.batch_size)
    try:
        for n in counts:
            job = estimate(replace(cfg, trainer=replace(t, grad_accum=n)))
            if gpus_needed(job) is not None:
                return n
    except (ValueError, KeyError, TypeError, OSError):
        return 1
    return counts[-1]


def describe_grad_accum(cfg: Config) -> str:
    """``grad_accum auto → 16`` (or ``grad_accum 4``): the micro-batches of a step, and whether
    ``trainer.grad_accum=auto`` chose them."""
    t = cfg.trainer
    return f"grad_accum {'auto → ' if t.grad_accum_auto else ''}{t.grad_accum}"


def start_lines(cfg: Config) -> tuple[str | None, str | None]:
    """What a job logs as it starts, before loading anything: its micro-batches and memory
    estimate (None without an estimate), and :func:`memory_warning` if it does not fit one GPU
    of ``cost.gpu_memory_gb`` (None if it does)."""
    try:
        job = estimate(cfg)
    except (ValueError, KeyError, TypeError, OSError):
        return None, None
    t = cfg.trainer
    info = (
        f"{describe_grad_accum(cfg)}: {t.grad_accum} micro-batch(es) of "
        f"{t.batch_size // t.grad_accum} example(s) per step, memory ≈ {_gb(job.memory_bytes)} "
        f"(estimate; cost.gpu_memory_gb={cfg.cost.gpu_memory_gb:g})"
    )
    warning = memory_warning(job) if gpus_needed(job) is None else None
    return info, warning.strip() if warning else None


@dataclass(frozen=True)
class MemoryFix:
    """Switches with which a job fits its GPU, and what the job then needs."""

    overrides: tuple[str, ...]  # Hydra overrides, e.g. ("model.gradient_checkpointing=true",)
    gpus: int  # model.device_map=auto over this many GPUs (1: not spread)
    memory_bytes: int  # on the fullest GPU
    gpu_hours: float  # × gpus: the job holds every one of them while it runs


def memory_fixes(cfg: Config) -> list[MemoryFix]:
    """The smallest sets of memory switches with which the job fits ``cost.gpu_memory_gb``,
    found by re-estimating it with each set: no part of a set fits alone, each switch is at its
    smallest setting; fewest GPUs, then fewest switches, then fewest GPU-hours first.

    The switches (those the job does not use yet): ``model.dtype=bfloat16`` (weights and
    activations in 2 bytes), ``model.gradient_checkpointing=true`` (activations: each block's
    input only; 1.5 × the FLOPs), ``trainer.grad_accum=N`` (batch_size / N examples per
    micro-batch; N divides batch_size), ``model.device_map=auto`` over 2..MAX_GPUS GPUs
    (:func:`memory_per_gpu`; the job holds all of them, so k × the GPU-hours).
    """
    model, trainer = cfg.model, cfg.trainer
    batch = trainer.batch_size
    accums = [n for n in divisors(batch) if n > trainer.grad_accum]
    spread = model.device_map in DEVICE_MAP_STRATEGIES  # already spread by the job itself
    switches = [
        *(["model.dtype=bfloat16"] if model.dtype == "float32" else []),
        *([] if model.gradient_checkpointing else ["model.gradient_checkpointing=true"]),
        *(["trainer.grad_accum"] if accums else []),
        *([] if spread else ["model.device_map=auto"]),
    ]
    fixes: list[tuple[set[str], MemoryFix]] = []
    for n in range(1, len(switches) + 1):
        for chosen in itertools.combinations(switches, n):
            if any(found <= set(chosen) for found, _ in fixes):
                continue  # a part of this set fits already
            base = replace(
                cfg,
                model=replace(
                    model,
                    dtype="bfloat16" if "model.dtype=bfloat16" in chosen else model.dtype,
                    gradient_checkpointing=model.gradient_checkpointing
                    or "model.gradient_checkpointing=true" in chosen,
                    device_map="auto" if "model.device_map=auto" in chosen else model.device_map,
                ),
            )
            if "model.device_map=auto" in chosen:
                gpu_counts = range(2, MAX_GPUS + 1)
            else:
                gpu_counts = range(1, MAX_GPUS + 1 if spread else 2)
            options = []  # (gpus, grad_accum, job): the fewest GPUs, then the largest micro-batch
            for accum in accums if "trainer.grad_accum" in chosen else [trainer.grad_accum]:
                job = estimate(replace(base, trainer=replace(trainer, grad_accum=accum)))
                gpus = next((k for k in gpu_counts if _fits(job, k)), None)
                if gpus is not None:
                    options.append((gpus, accum, job))
            if not options:
                continue
            gpus, accum, job = min(options, key=lambda o: o[:2])
            overrides = tuple(
                f"trainer.grad_accum={accum}" if x == "trainer.grad_accum" else x for x in chosen
            )
            fix = MemoryFix(overrides, gpus, memory_per_gpu(job, gpus), gpus * job.gpu_hours)
            fixes.append((set(chosen), fix))
    return sorted(
        (fix for _, fix in fixes),
        key=lambda f: (f.gpus, len(f.overrides), f.gpu_hours, f.memory_bytes),
    )


def describe_fix(fix: MemoryFix, job: JobCost) -> str:
    """``trainer.grad_accum=16 (≈ 64.11 GB)``; with what the fix adds: GPUs, GPU-hours."""
    gpus = f" on {fix.gpus} GPUs" if fix.gpus > 1 else ""
    each = " each" if fix.gpus > 1 else ""
    ratio = fix.gpu_hours / job.gpu_hours if job.gpu_hours else 1.0
    hours = f", {ratio:.3g}× the GPU-h" if abs(ratio - 1) > 1e-9 else ""
    return f"{' '.join(fix.overrides)}{gpus} (≈ {_gb(fix.memory_bytes)}{each}{hours})"


def memory_warning(job: JobCost) -> str | None:
    """A warning if the job does not fit one GPU of ``cost.gpu_memory_gb``, with the switches
    that make it fit (:func:`memory_fixes`); a note if its own ``model.device_map`` needs
    several; None if it fits one."""
    gpus, c = gpus_needed(job), job.cost
    if gpus == 1:
        return None
    if gpus is not None:
        return (
            f"  note: model.device_map={job.config.model.device_map} must spread it over "
            f">= {gpus} GPUs of {c.gpu_memory_gb:g} GB (≈ {_gb(memory_per_gpu(job, gpus))} "
            f"each; {gpus}× the GPU-h)"
        )
    fixes = memory_fixes(job.config) if job.config is not None else []
    fits = (
        f"fits with: {' | '.join(describe_fix(f, job) for f in fixes)}"
        if fixes
        else f"no combination of the memory switches fits it, even on {MAX_GPUS} GPUs"
    )
    return (
        f"  WARNING: needs ≈ {_gb(job.memory_bytes)}, more than the {c.gpu_memory_gb:g} GB of "
        f"one GPU ({c.gpu}; cost.gpu_memory_gb); {fits}"
    )


def _micro(job: JobCost) -> str:
    """``grad_accum auto → 16``, or ``grad_accum 1`` for a job without its config."""
    return describe_grad_accum(job.config) if job.config is not None else "grad_accum ?"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.3f} MB"


def describe(job: JobCost) -> str:
    """One line per job, and a second if it does not fit its GPU (:func:`memory_warning`): what
    ``dry_run=true`` prints."""
    c = job.cost
    method = get_method(job.method)
    runs = (
        f"{len(job.tasks)} task(s) as one mixture × {job.steps} steps"
        if method.mixture
        else f"{len(job.tasks)} task(s) × {job.steps} steps"
    )
    tuned = (
        f", gradients + Adafactor state {_gb(job.tuned_state_bytes)}"
        if job.tuned_state_bytes
        else ""
    )
    saved = (
        f" | method={job.method}: all weights trained, saves ≈ {_gb(job.saved_bytes)} "
        f"(best/ + last/, a full copy per {'mixture' if method.mixture else 'task'})"
        if method.saves == "model"
        else f" | method=lora: {job.trainable_params:,} LoRA weights trained, saves ≈ "
        f"{_gb(job.saved_bytes)} (best/ + last/ adapters per task)"
        if method.saves == "adapter"
        else ""
    )
    line = (
        f"dry run {job.name}: {runs} | "
        f"params {job.params:,} | memory ≈ {_gb(job.memory_bytes)} "
        f"(weights {_gb(job.weights_bytes)}{tuned}, activations "
        f"{_gb(job.activation_bytes)}/micro-batch, {_micro(job)}){saved}"
        f" | {job.flops_per_step:.3e} FLOP/step | {job.total_flops:.3e} FLOP | "
        f"{job.gpu_hours:.2f} GPU-h at {c.utilisation:.0%} of {c.peak_tflops:g} TFLOP/s ({c.gpu})"
    )
    warning = memory_warning(job)
    return line if warning is None else f"{line}\n{warning}"


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


# --- a sweep in groups -----------------------------------------------------------------------


@dataclass
class JobGroup:
    """Jobs of one model size and one value of each sweep axis that changes the cost."""

    size: str
    axes: tuple[str, ...]  # the axis overrides, e.g. ("prompt_len=100",)
    jobs: list[JobCost]

    @property
    def label(self) -> str:
        return " ".join((f"model={self.size}", *self.axes))

    @property
    def largest(self) -> JobCost:
        return max(self.jobs, key=lambda j: j.memory_bytes)


def _signature(job: JobCost) -> tuple:
    """What a group line shows of a job: jobs with equal signatures print alike."""
    return (
        job.size,
        job.tasks,
        job.steps,
        job.params,
        job.memory_bytes,
        job.flops_per_step,
        job.total_flops,
        job.method,
        job.saved_bytes,
        astuple(job.cost),
    )


def group_jobs(jobs: Sequence[JobCost], overrides: Sequence[Sequence[str]]) -> list[JobGroup]:
    """The jobs of a sweep grouped by model size, then by the sweep's other axes (the override
    keys whose value differs between jobs) in sweep order, leaving out every axis along which
    the jobs cost the same (a seed, an initialiser): within a group all jobs print alike.
    Sizes, and groups within a size, in sweep order.

    Args:
        overrides: each job's overrides (``key=value``), as the sweeper expanded them.
    """
    values = [dict(o.split("=", 1) for o in job if "=" in o) for job in overrides]
    keys = dict.fromkeys(k for v in values for k in v)
    axes = [k for k in keys if k != "model" and len({v.get(k) for v in values}) > 1]

    def split(axes: Sequence[str]) -> dict[tuple[str, ...], list[JobCost]]:
        groups: dict[tuple[str, ...], list[JobCost]] = {}
        for job, v in zip(jobs, values, strict=True):
            key = (job.size, *(f"{k}={v[k]}" for k in axes if k in v))
            groups.setdefault(key, []).append(job)
        return groups

    for axis in reversed(list(axes)):  # the last axes first: seeds usually come last
        fewer = [k for k in axes if k != axis]
        if all(len({_signature(j) for j in g}) == 1 for g in split(fewer).values()):
            axes = fewer
    groups = [JobGroup(key[0], key[1:], group) for key, group in split(axes).items()]
    sizes = list(dict.fromkeys(g.size for g in groups))
    return sorted(groups, key=lambda g: sizes.index(g.size))  # stable: sweep order within


def describe_group(group: JobGroup, width: int = 0) -> str:
    """One line per group: its jobs, steps, memory of its largest job, FLOPs and GPU-hours."""
    job = group.largest
    flops = sum(j.total_flops for j in group.jobs)
    hours = sum(j.gpu_hours for j in group.jobs)
    return (
        f"{group.label + ':':<{width + 1}} {len(group.jobs)} job(s) × {len(job.tasks)} task(s) × "
        f"{job.steps} steps | params {job.params:,} | memory ≈ {_gb(job.memory_bytes)} "
        f"({_micro(job)}) | "
        f"{flops:.3e} FLOP | {hours:.2f} GPU-h"
    )


def describe_subtotal(size: str, jobs: Sequence[JobCost]) -> str:
    """The jobs of one model size."""
    flops = sum(j.total_flops for j in jobs)
    hours = sum(j.gpu_hours for j in jobs)
    peak = max(j.memory_bytes for j in jobs)
    return (
        f"subtotal model={size}: {len(jobs)} job(s) | {flops:.3e} FLOP | {hours:.2f} GPU-h | "
        f"largest job memory ≈ {_gb(peak)}"
    )


def describe_groups(jobs: Sequence[JobCost], overrides: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a grouped sweep: a header with the GPU assumed, per size its groups (each
    followed by its memory warning, if any) and, if it has several, their subtotal."""
    groups = group_jobs(jobs, overrides)
    axes = dict.fromkeys(a.split("=", 1)[0] for g in groups for a in g.axes)
    costs = {astuple(j.cost) for j in jobs}
    c = jobs[0].cost
    gpu = (
        f"{c.gpu}: {c.gpu_memory_gb:g} GB, {c.utilisation:.0%} of {c.peak_tflops:g} TFLOP/s"
        if len(costs) == 1
        else "cost.* differs between the groups"
    )
    lines = [
        f"{len(jobs)} job(s) in {len(groups)} group(s) of equal cost, by "
        f"{', '.join(['model', *axes])} ({gpu}; --jobs: one line per job)"
    ]
    width = max(len(g.label) for g in groups)
    for size in dict.fromkeys(g.size for g in groups):
        of_size = [g for g in groups if g.size == size]
        for group in of_size:
            lines.append(describe_group(group, width))
            warning = memory_warning(group.largest)
            if warning is not None:
                lines.append(warning)
        if len(of_size) > 1:
            lines.append(describe_subtotal(size, [j for g in of_size for j in g.jobs]))
    return lines


# --- a sweep packed (hydra/launcher=packed) ---------------------------------------------------

# An ASSUMPTION, not a measurement (no GPU here): the fraction of ``cost.utilisation`` a step
# sustains grows with the encoder tokens n it holds, as n / (n + HALF_UTILISATION_TOKENS): with
# 8,192 tokens in its matmuls a GPU runs at half its sustained rate. A paper job (batch 32 ×
# ~612 tokens = 19.6k) is then at 70 % of it; a pack of 15 at 97 %. Packing also saves each
# job's start-up, model load and evaluation passes, which this model leaves out.
HALF_UTILISATION_TOKENS = 8192


def utilisation_at(tokens: int, cost: CostConfig) -> float:
    """Assumed utilisation of a step holding ``tokens`` encoder tokens (see above)."""
    return cost.utilisation * tokens / (tokens + HALF_UTILISATION_TOKENS)


@dataclass
class PackedPrice:
    """A sweep priced unpacked (one process per job) and packed (one per pack): an estimate."""

    jobs: int
    packs: int
    hours_unpacked: float
    hours_packed: float
    peak_unpacked: int  # bytes on the fullest GPU
    peak_packed: int


def _step_tokens(cfg: Config, prompt_len: int) -> int:
    from repro.tasks import task_names

    te = max(
        lengths(replace(cfg, prompt_len=prompt_len), name)[0] for name in task_names(cfg.task.name)
    )
    return cfg.trainer.batch_size * te


def price_packed(configs: Sequence[Config], budget_gb: float | None = None) -> PackedPrice:
    """GPU-hours, processes and peak memory per GPU of a sweep run solo and packed
    (:func:`repro.pack.plan_packs`), both under :func:`utilisation_at`. A packed member pays
    for its pack's longest prompt (left padding)."""
    from repro.pack import pack_memory, plan_packs

    def hours(flops: float, tokens: int, cost: CostConfig) -> float:
        return flops / (cost.peak_tflops * 1e12 * utilisation_at(tokens, cost)) / 3600

    jobs = [estimate(c) for c in configs]
    unpacked = sum(
        hours(j.total_flops, _step_tokens(c, c.prompt_len), c.cost)
        for j, c in zip(jobs, configs, strict=True)
    )
    packs = plan_packs(configs, budget_gb)
    packed = 0.0
    for pack in packs:
        members = [configs[i] for i in pack]
        longest = max(c.prompt_len for c in members)
        flops = sum(estimate(replace(c, prompt_len=longest)).total_flops for c in members)
        tokens = sum(_step_tokens(c, longest) for c in members)
        packed += hours(flops, tokens, members[0].cost)
    return PackedPrice(
        jobs=len(configs),
        packs=len(packs),
        hours_unpacked=unpacked,
        hours_packed=packed,
        peak_unpacked=max(j.memory_bytes for j in jobs),
        peak_packed=max(pack_memory([configs[i] for i in pack]) for pack in packs),
    )


def describe_packed(configs: Sequence[Config]) -> list[str]:
    """The packed-vs-unpacked lines of a sweep: one per model size, then the total."""
    cost = configs[0].cost
    lines = [
        f"packed vs unpacked (ESTIMATE: utilisation assumed {cost.utilisation:.0%} × n/(n + "
        f"{HALF_UTILISATION_TOKENS}) for n encoder tokens per step, both ways; "
        f"{cost.gpu_memory_gb:g} GB per GPU; start-up, loading and evaluation not counted; "
        "docs/packing.md):"
    ]
    sizes = list(dict.fromkeys(c.model.size for c in configs))
    prices = [(s, price_packed([c for c in configs if c.model.size == s])) for s in sizes]
    if len(sizes) > 1:
        total = PackedPrice(
            jobs=sum(p.jobs for _, p in prices),
            packs=sum(p.packs for _, p in prices),
            hours_unpacked=sum(p.hours_unpacked for _, p in prices),
            hours_packed=sum(p.hours_packed for _, p in prices),
            peak_unpacked=max(p.peak_unpacked for _, p in prices),
            peak_packed=max(p.peak_packed for _, p in prices),
        )
        prices.append(("all", total))
    for size, price in prices:
        saved = price.hours_unpacked - price.hours_packed
        saved = 0.0 if abs(saved) < 0.005 else saved  # rounding, not a loss: print 0.00
        share = saved / price.hours_unpacked if price.hours_unpacked else 0.0
        lines.append(
            f"  model={size}: unpacked {price.jobs} process(es), {price.hours_unpacked:.2f} GPU-h, "
            f"peak ≈ {_gb(price.peak_unpacked)}/GPU | packed {price.packs} process(es), "
            f"{price.hours_packed:.2f} GPU-h, peak ≈ {_gb(price.peak_packed)}/GPU | saves "
            f"{saved:.2f} GPU-h ({share:.0%})"
        )
    return lines


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
    jobs = sweep_jobs(overrides, multirun=multirun, config_dir=config_dir, config_name=config_name)
    return [cfg for _, cfg in jobs]


def sweep_jobs(
    overrides: Sequence[str],
    *,
    multirun: bool = False,
    config_dir: str | None = None,
    config_name: str = "config",
) -> list[tuple[list[str], Config]]:
    """Every job of :func:`sweep_configs` with its overrides (``key=value``, as the sweeper
    expanded them)."""
    plan = sweep_plan(overrides, multirun=multirun, config_dir=config_dir, config_name=config_name)
    return plan.jobs


@dataclass
class SweepPlan:
    """What a command launches (``jobs``, each with its overrides) and, for a panel sweep
    (``hydra/sweeper=panels``, :mod:`repro.panels`), what its panels list before duplicates
    are dropped (``listed``: panel, overrides, config; the same jobs, panel None, otherwise)."""

    jobs: list[tuple[list[str], Config]]
    listed: list[tuple[str | None, list[str], Config]]
    panel_line: str | None = None  # repro.panels.describe_panels, as the sweeper prints it


def sweep_plan(
    overrides: Sequence[str],
    *,
    multirun: bool = False,
    config_dir: str | None = None,
    config_name: str = "config",
) -> SweepPlan:
    """The jobs ``python -m repro.run [-m] ...`` launches, expanded as its sweeper does: Hydra's
    basic sweeper (``hydra.sweeper.params``, then the command line), or the panel sweeper
    (every panel expanded so, each run directory once: :func:`repro.panels.distinct_jobs`)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    import repro.rundir  # also registers the run_name resolver
    from repro.config import check_method_overrides, register_configs
    from repro.panels import describe_panels, distinct_jobs, expand_panels
    from repro.resolve import load_config

    register_configs()

    primary = Path(config_dir).resolve() if config_dir else CONF_DIR
    search = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir else []
    composed: dict[tuple[str, ...], tuple[str, Config]] = {}  # overrides -> (run dir, config)

    def job(overrides: Sequence[str]) -> tuple[str, Config]:
        key = tuple(overrides)
        if key not in composed:
            cfg = compose(config_name, overrides=[*search, *key], return_hydra_config=True)
            run_dir = str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
            with open_dict(cfg):
                del cfg["hydra"]
            config = load_config(cfg)
            check_method_overrides(config.method.name, list(key))
            composed[key] = (run_dir, config)
        return composed[key]

    with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
        panels = None
        if multirun:
            base = compose(config_name, overrides=search, return_hydra_config=True)
            sweeper = base.hydra.sweeper
            params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}
            panels = sweeper.get("panels")
        if panels:
            listing = expand_panels(OmegaConf.to_container(panels), params, overrides)
            distinct = distinct_jobs(
                listing,
                run_dir=lambda o: job(o)[0],
                fingerprint=lambda o: repro.rundir.fingerprint(job(o)[1]),
            )
            kept = [list(d.overrides) for d in distinct]
            line = describe_panels(listing, distinct)
        else:
            if multirun:
                args = [f"{k}={v}" for k, v in params.items()] + list(overrides)
                parsed = OverridesParser.create().parse_overrides(args)
                (kept,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
            else:
                kept = [list(overrides)]
            listing, line = [(None, o) for o in kept], None
        return SweepPlan(
            jobs=[(list(o), job(o)[1]) for o in kept],
            listed=[(panel, list(o), job(o)[1]) for panel, o in listing],
            panel_line=line,
        )


def describe_deduplication(plan: SweepPlan) -> list[str]:
    """A panel sweep's GPU-hours as its panels list them against its distinct jobs."""
    listed = sum(estimate(cfg).gpu_hours for _, _, cfg in plan.listed)
    distinct = sum(estimate(cfg).gpu_hours for _, cfg in plan.jobs)
    saved = listed - distinct
    share = saved / listed if listed else 0.0
    return [
        plan.panel_line or "",
        f"de-duplication: {len(plan.listed)} listed job(s) {listed:.2f} GPU-h | "
        f"{len(plan.jobs)} distinct {distinct:.2f} GPU-h | saves {saved:.2f} GPU-h ({share:.0%})",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.cost",
        description="Cost of `python -m repro.run [-m] overrides...` (parameters, memory, "
        "FLOPs, GPU-hours), a sweep in groups of jobs that cost the same, with subtotals per "
        "model size and the total; warns about jobs that do not fit cost.gpu_memory_gb. "
        "Loads no weights.",
    )
    parser.add_argument("-m", "--multirun", action="store_true", help="expand a sweep")
    parser.add_argument("--jobs", action="store_true", help="one line per job, not per group")
    parser.add_argument(
        "--packed",
        action="store_true",
        help="also price the sweep packed (hydra/launcher=packed) against unpacked",
    )
    parser.add_argument("--config-dir", "-cd", default=None)
    parser.add_argument("--config-name", "-cn", default="config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    from repro.cli import cli_error_message

    try:
        plan = sweep_plan(
            args.overrides,
            multirun=args.multirun,
            config_dir=args.config_dir,
            config_name=args.config_name,
        )
        expanded = plan.jobs
        configs = [cfg for _, cfg in expanded]
        jobs = [estimate(cfg) for cfg in configs]
        adaptations = adaptation_costs(configs)
    except Exception as err:
        message = cli_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    if args.jobs or len(jobs) == 1:
        for job in jobs:
            print(describe(job))
    else:
        print("\n".join(describe_groups(jobs, [o for o, _ in expanded])))
    for adaptation in adaptations:
        print(describe_adaptation(adaptation))
    print(describe_total(jobs, adaptations))
    if plan.panel_line is not None:
        print("\n".join(describe_deduplication(plan)))
    if args.packed:
        print("\n".join(describe_packed(configs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
