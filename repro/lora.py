"""LoRA (Hu et al. 2021) through peft, on every family: which layers ``method.target_modules``
names, the seeded injection, and the adapter's files.

``method.target_modules`` names T5's roles (``repro.config.LORA_TARGETS``: ``q``, ``k``, ``v``,
``o`` of attention, ``wi`` / ``wi_0`` / ``wi_1`` / ``wo`` of the feed-forward), so one sweep
means the same thing on every family. On T5 they are the module names themselves; on a causal
LM each role maps, by the architecture's transformers ``model_type``
(:data:`CAUSAL_LORA_MODULES`), to the module names given to peft. GPT-NeoX computes q, k and v
in one fused layer (``attention.query_key_value``): naming any of them adapts that layer, once.

:class:`LoraAdapter` is what :class:`repro.model.LoraT5` and :class:`repro.causal.LoraCausalLM`
share: A drawn from the run's seed (B zero), the adapter saved with a sorted
``adapter_config.json`` (loadable with ``PeftModel.from_pretrained``) and loaded back with its
shapes checked, and :func:`without_lora` to give a shared backbone back plain.

torch, peft and safetensors are imported inside the functions that build or read an adapter:
``python -m repro.cost`` reads the role table (through :mod:`repro.estimate_causal`) and never
loads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

# The decoder-only architectures LoRA knows the layers of: role → module name given to peft.
# GPT-NeoX (Pythia): q, k, v are one fused layer (peft's own default target for gpt_neox) and
# its MLP is not gated (wi, wo); Llama, Mistral and Qwen2 (SmolLM2, Qwen2.5): one projection
# per role, a gated MLP (wi_0 = gate, wi_1 = up, wo = down).
_GPT_NEOX = {
    "q": "attention.query_key_value",
    "k": "attention.query_key_value",
    "v": "attention.query_key_value",
    "o": "attention.dense",
    "wi": "mlp.dense_h_to_4h",
    "wo": "mlp.dense_4h_to_h",
}
_LLAMA = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "wi_0": "gate_proj",
    "wi_1": "up_proj",
    "wo": "down_proj",
}
CAUSAL_LORA_MODULES: dict[str, dict[str, str]] = {
    "gpt_neox": _GPT_NEOX,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}
# Why a role has no layer, by architecture (the refusal says it).
_MISSING = {
    "gpt_neox": "its MLP is not gated: wi, wo",
    "llama": "its MLP is gated: wi_0 (gate), wi_1 (up), wo",
    "mistral": "its MLP is gated: wi_0 (gate), wi_1 (up), wo",
    "qwen2": "its MLP is gated: wi_0 (gate), wi_1 (up), wo",
}


def causal_lora_modules(model_type: str, roles: Sequence[str]) -> list[str]:
    """The module names peft adapts for ``roles`` (``method.target_modules``) on a causal LM
    of transformers ``model_type``, each once, in the roles' order.

    Raises:
        ValueError: one line, for an architecture not in :data:`CAUSAL_LORA_MODULES` (naming
            it and the supported ones) or a role it has no layer for (naming the role and the
            roles it has).
    """
    table = CAUSAL_LORA_MODULES.get(model_type)
    if table is None:
        raise ValueError(
            f"method=lora does not know the layers of a {model_type!r} causal LM; "
            f"method.target_modules map onto {', '.join(CAUSAL_LORA_MODULES)} (docs/lora.md)"
        )
    missing = [role for role in roles if role not in table]
    if missing:
        raise ValueError(
            f"method.target_modules={list(roles)}: a {model_type} LM has no "
            f"{', '.join(missing)} ({_MISSING[model_type]}); choose among "
            f"{', '.join(table)} (docs/lora.md)"
        )
    return list(dict.fromkeys(table[role] for role in roles))


def without_lora(backbone):
    """``backbone`` with the LoRA layers a :class:`LoraAdapter` injected into it removed (in
    place; peft's ``unload``: the original linear layers, their weights untouched), so a
    backbone shared by several runs (``repro.transfer``'s cache, the next task of a job) never
    scores another run with an earlier run's adapter inside. A plain backbone is returned as it
    is."""
    previous = getattr(backbone, "_repro_lora", None)
    if previous is None:
        return backbone
    plain = previous.unload()
    plain.__dict__["_repro_lora"] = None
    return plain


class LoraAdapter:
    """The LoRA half of a tuned model (mixed into :class:`repro.model.LoraT5` and
    :class:`repro.causal.LoraCausalLM`, both ``nn.Module``): ``_inject`` puts peft's layers
    into the backbone, ``trainable_parameters`` are their A and B, ``save_adapter`` /
    ``load_adapter`` write and read ``best/`` and ``last/``."""

    saves = "adapter"  # what best/ and last/ hold (repro.trainer.save_trained)

    def _inject(
        self,
        backbone,
        *,
        r: int,
        alpha: float,
        dropout: float,
        target_modules: Sequence[str],
        task_type: str,
        seed: int,
    ):
        """peft's ``LoraConfig`` layers into ``backbone``, in place, after removing an adapter
        injected before (the previous task of a job: :func:`without_lora`); returns the
        backbone with them inside. peft's init: A Kaiming-uniform, drawn
        from ``seed`` alone (the caller's RNG stream is left as it was), B zero, so training
        starts at the backbone."""
        import torch
        from peft import LoraConfig, get_peft_model

        backbone = without_lora(backbone)  # the last task's adapter: back to the plain backbone
        backbone.requires_grad_(False)
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(target_modules),
            task_type=task_type,
        )
        with torch.random.fork_rng(devices=[]):  # A's random init from the run's seed alone
            torch.manual_seed(seed)
            peft_model = get_peft_model(backbone, config)
        object.__setattr__(self, "peft", peft_model)  # not a submodule: saves the adapter
        base = peft_model.get_base_model()  # the backbone itself, LoRA layers inside
        base.__dict__["_repro_lora"] = peft_model  # a plain attribute: no module cycle
        return base

    def trainable_parameters(self) -> list:
        return [p for n, p in self.backbone.named_parameters() if "lora_" in n]

    def save_adapter(self, directory: Path) -> None:
        """``adapter_config.json`` + ``adapter_model.safetensors`` (the LoRA weights only).

        peft keeps ``target_modules`` as a set and writes it in hash order (``["v", "q"]`` in
        one process, ``["q", "v"]`` in the next); it is written sorted, so that identical runs
        give identical bytes.
        """
        self.peft.save_pretrained(directory, safe_serialization=True)
        config_file = Path(directory) / "adapter_config.json"
        config = json.loads(config_file.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))  # as peft writes it

    def load_adapter(self, directory: Path) -> None:
        """Copy the LoRA weights of ``directory/adapter_model.safetensors`` into this model.

        Raises:
            ValueError: a tensor of another shape (another rank or backbone) or a missing one.
            OSError / safetensors errors: an unreadable file (the caller names it).
        """
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        saved = load_file(str(Path(directory) / "adapter_model.safetensors"))
        own = {k: v for k, v in self.peft.state_dict().items() if "lora_" in k}
        own = {k.replace(".default", ""): v for k, v in own.items()}
        if set(saved) != set(own):
            raise ValueError(
                f"checkpoint {directory} holds LoRA weights of other layers than this run's "
                f"(method.target_modules): e.g. {sorted(set(saved) ^ set(own))[:2]}"
            )
        for key, tensor in saved.items():
            if own[key].shape != tensor.shape:
                raise ValueError(
                    f"checkpoint {directory} holds {key} of shape {tuple(tensor.shape)}, but "
                    f"this run builds {tuple(own[key].shape)} (another method.r?)"
                )
        set_peft_model_state_dict(self.peft, saved)
