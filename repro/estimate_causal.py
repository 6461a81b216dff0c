"""The shape arithmetic of a decoder-only backbone (``model.family: causal``): parameters,
forward FLOPs and activation memory of one stack, which :mod:`repro.estimate` prices a causal
job with (its T5 functions hand a :class:`CausalShape` over to these). No weights are read.

A causal job runs one sequence per example through one decoder stack,
``[prompt; input; target]`` (:mod:`repro.causal`): ``S = prompt + input + target`` tokens,
the same lengths the T5 estimate takes from the task (``repro.estimate.lengths``: prompt +
input, target), with no encoder/decoder split. So, with ``inner = num_heads · d_kv``,
``kv = num_kv_heads · d_kv`` (grouped-query attention), ``L`` layers, ``V`` embedding rows:

- **parameters**: embedding ``V·d`` (+ an untied LM head ``V·d``), per layer the attention
  projections ``d·inner`` (q) + ``2·d·kv`` (k, v) + ``inner·d`` (o), the MLP ``3·d·d_ff``
  (gated: gate, up, down) or ``2·d·d_ff`` (plain), two norms, and a final norm; the biases
  and norms of the architecture (:data:`ARCHITECTURES`);
- **forward FLOPs** per example (2 per multiply-add; norms, softmax, biases, rotary ignored):
  ``S·L·(2·(2·d·inner + 2·d·kv + k·d·d_ff) + 4·S·inner) + (T+1)·2·d·V`` (k = 3 gated, 2 plain,
  T target tokens): the projections of every token, the attention scores and context over the
  whole sequence (eager attention computes the full ``S × S`` even under the causal mask), and
  the LM head over the T + 1 positions that predict the target (:mod:`repro.causal` asks the
  backbone for those logits only, ``logits_to_keep``). A training step is priced as T5's: forward + activation backward (the gradient
  must travel back through every layer to the prompt at the start), + 1 recomputed forward
  with checkpointing;
- **activations** per token and layer as the T5 encoder's (norms and residual ``5·d`` at the
  weights' dtype; q, k, v, context ``4·inner`` — eager attention repeats k, v to every head —,
  the MLP's ``4·d_ff`` gated / ``2·d_ff`` plain, scores + probabilities ``2·heads·S`` at the
  compute dtype), plus the backbone's logits over the T + 1 kept positions (compute dtype) and
  the target's fp32 logits, log-softmax and gradient (``3·T·V·4``).

Which biases and norms: the architecture's transformers ``model_type`` (a local checkpoint's
config.json), else what the schema's keys say (it has no bias key): ``gated_mlp: false`` is
GPT-NeoX (Pythia: a bias on every linear layer, LayerNorms with bias); ``gated_mlp: true`` is
Llama (SmolLM2: no bias, RMSNorm), or Qwen2 (q/k/v biases) when the model's checkpoints, path
or size name Qwen2 (Qwen2.5 included).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from repro.config import ModelConfig
from repro.lora import causal_lora_modules


@dataclass(frozen=True)
class Architecture:
    """Where a decoder-only family has biases, and its norms (LayerNorm: weight + bias)."""

    qkv_bias: bool  # on the q, k, v projections
    out_bias: bool  # on the attention output projection
    mlp_bias: bool  # on every MLP projection
    norm_bias: bool  # LayerNorm (weight + bias) rather than RMSNorm (weight)
    fused_qkv: bool = False  # one [q; k; v] projection (GPT-NeoX's query_key_value)


# By transformers' model_type. Mistral is Llama's shape.
ARCHITECTURES = {
    "gpt_neox": Architecture(True, True, True, True, fused_qkv=True),
    "qwen2": Architecture(True, False, False, False),
    "llama": Architecture(False, False, False, False),
    "mistral": Architecture(False, False, False, False),
}
_QWEN2 = re.compile(r"(?:^|[/_-])qwen2", re.IGNORECASE)


@dataclass(frozen=True)
class CausalShape:
    """The shape of a decoder-only LM (as in its config.json)."""

    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    d_kv: int  # head size
    d_ff: int
    vocab_size: int  # rows of the embedding matrix (padded, as the checkpoint stores it)
    tie_word_embeddings: bool
    gated_mlp: bool
    model_type: str  # a key of ARCHITECTURES

    @property
    def inner(self) -> int:
        """Width of the query projection: heads × d_kv."""
        return self.num_heads * self.d_kv

    @property
    def kv(self) -> int:
        """Width of the key and value projections: kv heads × d_kv."""
        return self.num_kv_heads * self.d_kv

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.model_type]


def model_type_of(model: ModelConfig) -> str:
    """The architecture a config's shape keys describe (module docstring)."""
    if not model.gated_mlp:
        return "gpt_neox"
    names = [*model.checkpoints.values(), model.path or "", model.size]
    return "qwen2" if any(_QWEN2.search(str(n)) for n in names) else "llama"


def causal_shape_of(model: ModelConfig) -> CausalShape:
    """The backbone's shape: a local checkpoint's config.json if there is one, else the keys of
    conf/model/<size>.yaml. Raises ValueError naming what is missing or not known."""
    config = Path(model.path).expanduser() / "config.json" if model.path else None
    if config is not None and config.exists():
        return _from_config_json(json.loads(config.read_text()))
    keys = ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size")
    missing = [k for k in keys if getattr(model, k) is None]
    if missing:
        raise ValueError(
            f"model={model.size} has no {', '.join('model.' + k for k in missing)}: a dry run "
            "needs the decoder's shape (set them, or model.path to a checkpoint with a "
            "config.json)"
        )
    return CausalShape(
        d_model=model.d_model,
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        num_kv_heads=model.num_kv_heads or model.num_heads,
        d_kv=model.d_kv,
        d_ff=model.d_ff,
        vocab_size=model.vocab_size,
        tie_word_embeddings=model.tie_word_embeddings,
        gated_mlp=model.gated_mlp,
        model_type=model_type_of(model),
    )


def _from_config_json(hf: dict) -> CausalShape:
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"a dry run cannot price a {kind!r} checkpoint (model.path); known decoder-only "
            f"architectures: {', '.join(ARCHITECTURES)}"
        )
    heads = hf["num_attention_heads"]
    return CausalShape(
        d_model=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        d_kv=hf.get("head_dim") or hf["hidden_size"] // heads,
        d_ff=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
        # transformers' default for these three families: untied
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        gated_mlp=kind != "gpt_neox",
        model_type=kind,
    )


def param_shapes(s: CausalShape) -> list[tuple[int, ...]]:
    """The shape of every weight tensor, as transformers holds them (what :func:`count_params`
    sums; what Adafactor keeps a second moment of, tensor by tensor)."""
    a, d, ff = s.architecture, s.d_model, s.d_ff
    widths = (s.inner, s.kv, s.kv)  # q, k, v
    if a.fused_qkv:
        qkv = [(sum(widths), d), *([(sum(widths),)] if a.qkv_bias else [])]
    else:
        qkv = [(w, d) for w in widths] + ([(w,) for w in widths] if a.qkv_bias else [])
    attention = [*qkv, (d, s.inner), *([(d,)] if a.out_bias else [])]
    ins = [(ff, d)] * (2 if s.gated_mlp else 1)  # gate, up | up
    mlp = [*ins, (d, ff)] + ([(ff,)] * len(ins) + [(d,)] if a.mlp_bias else [])
    norm = [(d,), (d,)] if a.norm_bias else [(d,)]
    layer = [*attention, *mlp, *norm, *norm]
    embeddings = [(s.vocab_size, d)] * (1 if s.tie_word_embeddings else 2)
    return embeddings + layer * s.num_layers + norm


def count_params(s: CausalShape) -> int:
    """Every parameter: embedding, decoder layers, final norm, LM head (once if tied)."""
    return sum(math.prod(shape) for shape in param_shapes(s))


def forward_flops(s: CausalShape, tokens: int, target_tokens: int) -> int:
    """FLOPs of one example's forward pass through the stack (module docstring).

    Args:
        tokens: the sequence: prompt + input + target tokens.
        target_tokens: the target's: the LM head runs on the positions that predict them
            (the last input token's on: ``logits_to_keep``, :mod:`repro.causal`).
    """
    d, inner, t = s.d_model, s.inner, tokens
    mlp = (3 if s.gated_mlp else 2) * d * s.d_ff
    projections = 2 * (2 * d * inner + 2 * d * s.kv + mlp)  # q, o; k, v; the MLP
    head = min(target_tokens + 1, t) * 2 * d * s.vocab_size
    return t * s.num_layers * (projections + 4 * t * inner) + head


def activation_bytes(
    s: CausalShape,
    micro_batch: int,
    tokens: int,
    target_tokens: int,
    bytes_per: int,
    checkpointing: bool = False,
    compute_bytes: int | None = None,
) -> int:
    """Activations kept for backward in one micro-batch (eager attention; a rough guide, ±50%;
    module docstring). ``tokens``: the whole sequence; ``bytes_per`` / ``compute_bytes`` as
    ``repro.estimate.activation_bytes``."""
    d, inner, h, t = s.d_model, s.inner, s.num_heads, tokens
    wb, cb = bytes_per, bytes_per if compute_bytes is None else compute_bytes
    mlp = (4 if s.gated_mlp else 2) * s.d_ff
    layer = t * 5 * d * wb + t * (4 * inner + mlp + 2 * h * t) * cb
    logits = (target_tokens + 1) * s.vocab_size * cb + 3 * target_tokens * s.vocab_size * 4
    kept = s.num_layers * t * d * wb + layer if checkpointing else s.num_layers * layer
    return micro_batch * (kept + logits)


def lora_shapes(s: CausalShape, targets, r: int) -> list[tuple[int, int]]:
    """The LoRA matrices peft adds (``method=lora``): A [r, in] and B [out, r] beside every
    layer the roles ``targets`` name on this architecture (:func:`repro.lora.causal_lora_modules`),
    in each decoder layer. GPT-NeoX's fused q, k, v projection (in ``d``, out ``inner + 2·kv``)
    is adapted once per layer however many of q, k, v are named.

    Raises:
        ValueError: a role this architecture has no layer for (one line).
    """
    d, ff, inner, kv = s.d_model, s.d_ff, s.inner, s.kv
    widths = {  # module → (in, out), as transformers builds it
        "attention.query_key_value": (d, inner + 2 * kv),
        "attention.dense": (inner, d),
        "mlp.dense_h_to_4h": (d, ff),
        "mlp.dense_4h_to_h": (ff, d),
        "q_proj": (d, inner),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (inner, d),
        "gate_proj": (d, ff),
        "up_proj": (d, ff),
        "down_proj": (ff, d),
    }
    shapes = []
    for module in causal_lora_modules(s.model_type, targets):
        fan_in, fan_out = widths[module]
        shapes += [(r, fan_in), (fan_out, r)] * s.num_layers
    return shapes
