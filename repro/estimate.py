"""What one job costs, from its config alone: parameters, memory, FLOPs, GPU-hours. No weights
are read.

The arithmetic behind ``dry_run=true``, ``python -m repro.cost`` (:mod:`repro.cost` prints it),
``trainer.grad_accum=auto`` and the packer's memory model (:mod:`repro.memory` asks whether a
job fits its GPU). The formulas (docs/cluster.md):

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
- GPU-hours = FLOPs / FLOP/s / 3600, at the FLOP/s of :func:`job_rate`: the GPU's dense peak
  at the precision the job runs at (``repro.gpus.priced_precision(trainer.precision)``; auto is
  bf16 on every GPU of the table) × :func:`utilisation_at` the encoder tokens of its step, or,
  with ``cost.calibration``, the FLOP/s measured at the nearest shape (:mod:`repro.calibration`).

A decoder-only model (``model.family: causal``) is priced the same way from its own shape
(:mod:`repro.estimate_causal`: one stack over prompt + input + target tokens; the utilisation
counts all of them); it needs no LM adaptation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from repro import estimate_causal as causal
from repro.calibration import Rate, job_rate, utilisation_at
from repro.checkpoints import own_lm_adapt_steps
from repro.config import CONF_DIR, Config, ModelConfig
from repro.cost_config import CostConfig
from repro.estimate_causal import CausalShape
from repro.factoring import second_moment_numel
from repro.gpus import priced_precision
from repro.methods import check_tasks, get_method
from repro.tasks import MIXTURES, get_task, task_names
from repro.trainer_config import OptimizerConfig

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


def shape_of(model: ModelConfig) -> Shape | CausalShape:
    """The backbone's shape: a local checkpoint's config.json if there is one, else the keys of
    conf/model/<size>.yaml (a causal model's: :func:`repro.estimate_causal.causal_shape_of`).
    Raises ValueError naming what is missing."""
    if model.family == "causal":
        return causal.causal_shape_of(model)
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
    if isinstance(s, CausalShape):
        return causal.param_shapes(s)
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
    if isinstance(s, CausalShape):
        return causal.lora_shapes(s, targets, r)
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
    if isinstance(s, CausalShape):
        return causal.count_params(s)
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
        dec_tokens: decoder length: target tokens. (A causal model: one sequence of both.)
    """
    if isinstance(s, CausalShape):
        return causal.forward_flops(s, enc_tokens + dec_tokens, dec_tokens)
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
    compute_bytes: int | None = None,
) -> int:
    """Activations kept for backward in one micro-batch (eager attention; a rough guide, ±50%).

    Per encoder token and layer: norm in/out ×2 (4d), residual (d), q, k, v, context (4·inner),
    FFN wi_0, gelu, wi_1, product (4·d_ff), scores + probabilities (2·heads·T_enc). The decoder
    adds cross-attention (its q, context, norms, scores over T_enc) and the cross keys/values
    (2·inner per encoder token and layer). Logits stay fp32 (logits, log-softmax, gradient).
    With checkpointing only each layer's input is kept, plus one layer recomputed in backward.

    Args:
        bytes_per: bytes of the weights' dtype (``model.dtype``), which the residual stream and
            the norms' activations keep (fp32 stays fp32 under autocast).
        compute_bytes: bytes of what the matmuls save (q, k, v, contexts, FFN intermediates,
            attention scores): 2 under bf16 autocast; None = ``bytes_per``.
    """
    if isinstance(s, CausalShape):
        return causal.activation_bytes(
            s,
            micro_batch,
            enc_tokens + dec_tokens,
            dec_tokens,
            bytes_per,
            checkpointing,
            compute_bytes,
        )
    d, inner, ff, h, te, td = s.d_model, s.inner, s.d_ff, s.num_heads, enc_tokens, dec_tokens
    wb, cb = bytes_per, bytes_per if compute_bytes is None else compute_bytes
    enc_layer = te * 5 * d * wb + te * (4 * inner + 4 * ff + 2 * h * te) * cb
    dec_layer = (
        td * 7 * d * wb + (td * (6 * inner + 4 * ff + 2 * h * (td + te)) + te * 2 * inner) * cb
    )
    logits = 3 * td * s.vocab_size * 4
    if checkpointing:
        inputs = (s.num_layers * te + s.num_decoder_layers * td) * d * wb
        kept = inputs + max(enc_layer, dec_layer)
    else:
        kept = s.num_layers * enc_layer + s.num_decoder_layers * dec_layer
    return micro_batch * (kept + logits)


def matmul_bytes(weights_dtype: str, precision: str) -> int:
    """Bytes of what the matmuls save: 2 under bf16 autocast, else the weights' bytes."""
    return min(BYTES[weights_dtype], 2) if precision == "bf16" else BYTES[weights_dtype]


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
    precision: str = "bf16"  # what it runs at on the GPU (repro.gpus.priced_precision)
    step_tokens: int = 0  # encoder tokens of a step: batch_size × (prompt + input), longest task
    rate: Rate | None = None  # the FLOP/s gpu_hours is priced at, and how
    family: str = "t5"  # causal: one stack; step_tokens counts prompt + input + target

    @property
    def memory_bytes(self) -> int:
        """The estimate (:mod:`repro.estimate`'s memory model)."""
        return (
            self.weights_bytes
            + self.prompt_state_bytes
            + self.tuned_state_bytes
            + self.activation_bytes
        )

    @property
    def memory_ratio(self) -> float:
        """Measured / estimated memory of the calibration's nearest step; 1 without one."""
        return self.rate.memory_ratio if self.rate is not None else 1.0


def lengths(cfg: Config, task_name: str) -> tuple[int, int]:
    """(encoder tokens, decoder tokens) per example: prompt + input, target; the task's limits
    unless ``cost.input_len`` / ``cost.target_len`` give typical lengths."""
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
    shape = shape_of(cfg.model)
    params = count_params(shape)
    tasks = task_names(cfg.task.name)
    check_tasks(cfg.method.name, cfg.task.name, tasks, MIXTURES)
    method = get_method(cfg.method.name)
    t = cfg.trainer
    precision = priced_precision(t.precision)
    checkpointing = cfg.model.gradient_checkpointing
    tuned = method.trains == "backbone"
    per_task = [lengths(cfg, name) for name in tasks]
    # a step's examples: batch_size, or those filling trainer.batch_tokens at these lengths
    flops = [
        step_flops(shape, t.step_examples(te), te, td, checkpointing, weight_grads=tuned)
        for te, td in per_task
    ]
    # one run over the mixture (priced at its longest task), or one run per task
    total = max(flops) * t.steps if method.mixture else sum(f * t.steps for f in flops)
    te, td = max(per_task)
    examples = t.step_examples(te)
    is_causal = isinstance(shape, CausalShape)
    step_tokens = examples * (te + td if is_causal else te)
    rate = job_rate(cfg.cost, precision, step_tokens, params, checkpointing, cfg.model.dtype)
    if is_causal:  # every token of its sequence goes through the one stack
        rate = replace(rate, basis=rate.basis.replace(" encoder tokens/", " tokens/"))
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
            shape,
            examples // t.grad_accum,
            te,
            td,
            BYTES[cfg.model.dtype],
            checkpointing,
            matmul_bytes(cfg.model.dtype, precision),
        ),
        flops_per_step=max(flops),
        total_flops=total,
        gpu_hours=total / rate.flops_per_second / 3600,
        cost=cfg.cost,
        config=cfg,
        method=method.name,
        tuned_state_bytes=tuned_bytes,
        saved_bytes=saved,
        trainable_params=trainable,
        precision=precision,
        step_tokens=step_tokens,
        rate=rate,
        family="causal" if is_causal else "t5",
    )


def rate_at(job: JobCost, tokens: int) -> float:
    """The FLOP/s of a step like ``job``'s holding ``tokens`` encoder tokens (a pack's): the
    job's rate moved along :func:`utilisation_at` (calibrated or assumed alike)."""
    return (
        job.rate.flops_per_second
        * utilisation_at(tokens, job.cost)
        / utilisation_at(job.step_tokens, job.cost)
    )


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
    precision: str = "bf16"  # lm_adapt.precision on a GPU of the table (conf/lm_adapt.yaml)
    rate: Rate | None = None


def lm_adapt_defaults() -> dict:
    """The ``lm_adapt:`` node of conf/lm_adapt.yaml (what ``python -m repro.lm_adapt`` runs)."""
    return yaml.safe_load((CONF_DIR / "lm_adapt.yaml").read_text())["lm_adapt"]


def adaptation_costs(configs: Sequence[Config]) -> list[AdaptationCost]:
    """The LM adaptation a sweep's jobs need, once per size
    (``repro.checkpoints.own_lm_adapt_steps``: jobs with ``lm_adapt_source=own``, or at
    10K/50K): one run to the largest step count, all weights trained, 3 × forward FLOPs per
    example (module docstring). A causal model needs none."""
    needed: dict[str, tuple[Config, set[int]]] = {}
    for cfg in configs:
        steps = None if cfg.model.family == "causal" else own_lm_adapt_steps(cfg)
        if steps is not None:
            needed.setdefault(cfg.model.size, (cfg, set()))[1].add(steps)
    defaults = lm_adapt_defaults()
    batch, t_in, t_out = (defaults[k] for k in ("batch_size", "input_length", "target_length"))
    # repro.lm_adapt: fp32 weights, computed as lm_adapt.precision says (auto: bf16 on a GPU)
    precision = priced_precision(defaults.get("precision", "auto"))
    out = []
    for size, (cfg, steps) in needed.items():
        shape = shape_of(cfg.model)
        per_step = 3 * batch * forward_flops(shape, t_in, t_out)
        total = max(steps) * per_step
        rate = job_rate(cfg.cost, precision, batch * t_in, count_params(shape))
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
                gpu_hours=total / rate.flops_per_second / 3600,
                cost=cfg.cost,
                precision=precision,
                rate=rate,
            )
        )
    return out
