"""The decoder-only ladders (conf/model/pythia_*, qwen2_5_*, smollm2_*) and their price: each
file's parameter count is the architecture's as transformers builds it (on the meta device: no
download), repro.estimate counts the same, its step FLOPs match a count made from the built
model's own layers and torch's FLOP counter, and `python -m repro.cost` prints a causal job in
its own words (tokens of the whole sequence, no LM adaptation)."""

import functools
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig, Qwen2Config

import repro.run  # noqa: F401  (registers the schema and the run_name resolver)
from repro.causal import PromptedCausalLM
from repro.config import Config, ModelConfig
from repro.cost.cli import main
from repro.cost.report import describe
from repro.estimate import (
    adaptation_costs,
    estimate,
    forward_flops,
    lora_shapes,
    param_shapes,
    shape_of,
)
from repro.estimate_causal import CausalShape, causal_shape_of, count_params
from repro.prompts import SoftPrompt
from repro.resolve import load_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
LADDERS = {
    "pythia": ["70m", "160m", "410m", "1b", "1b4", "2b8", "6b9", "12b"],
    "qwen2_5": ["0b5", "1b5", "3b", "7b", "14b", "32b", "72b"],
    "smollm2": ["135m", "360m", "1b7"],
}
MODELS = [f"{family}_{size}" for family, sizes in LADDERS.items() for size in sizes]
# the published totals (Pythia's model card; Qwen2.5's and SmolLM2's hub pages, to the digit)
PUBLISHED = {
    "pythia_70m": 70_426_624,
    "pythia_160m": 162_322_944,
    "pythia_410m": 405_334_016,
    "pythia_1b": 1_011_781_632,
    "pythia_1b4": 1_414_647_808,
    "pythia_2b8": 2_775_208_960,
    "pythia_6b9": 6_857_302_016,
    "pythia_12b": 11_846_072_320,
    "qwen2_5_0b5": 494_032_768,
    "qwen2_5_32b": 32_763_876_352,
    "smollm2_135m": 134_515_008,
    "smollm2_360m": 361_821_120,
}


def compose_config(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides)))


@functools.cache
def job_config(name: str) -> Config:
    """``model=<name>`` as its Hydra option (a file name without dots), on RTE (input limit
    512, target 8, batch 32, prompt 100)."""
    return compose_config(f"model={name}", "objective=next_token", "task=rte")


def conf(name: str) -> dict:
    return yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text())


def hf_config(keys: dict):
    """The transformers config of a conf file's shape keys, by the family its hub id names."""
    shape = dict(
        hidden_size=keys["d_model"],
        num_hidden_layers=keys["num_layers"],
        num_attention_heads=keys["num_heads"],
        intermediate_size=keys["d_ff"],
        vocab_size=keys["vocab_size"],
        tie_word_embeddings=keys["tie_word_embeddings"],
    )
    hub = keys["checkpoints"]["next_token"]
    if hub.startswith("EleutherAI/pythia-"):
        return GPTNeoXConfig(**shape)
    kv = dict(num_key_value_heads=keys["num_kv_heads"], head_dim=keys["d_kv"])
    if hub.startswith("Qwen/Qwen2.5-"):
        return Qwen2Config(**shape, **kv)
    assert hub.startswith("HuggingFaceTB/SmolLM2-")
    return LlamaConfig(**shape, **kv)


def meta_model(keys: dict) -> nn.Module:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config(keys))


def test_the_ladders_are_the_causal_files_of_their_families():
    prefixes = tuple(f"{family}_" for family in LADDERS)
    files = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem.startswith(prefixes))
    assert files == sorted(MODELS)
    assert all(conf(name)["family"] == "causal" for name in MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_params_equal_the_architecture_transformers_builds(name):
    keys = conf(name)
    assert keys["size"] == name and "." not in name
    model = meta_model(keys)
    built = sum(p.numel() for p in model.parameters())  # a tied head counts once
    assert keys["params"] == built == PUBLISHED.get(name, built)
    assert model.config.tie_word_embeddings == keys["tie_word_embeddings"]
    assert model.get_input_embeddings().weight.shape == (keys["vocab_size"], keys["d_model"])
    # the estimate counts the same, tensor by tensor (what Adafactor would hold)
    cfg = job_config(name)
    assert isinstance(shape_of(cfg.model), CausalShape)
    assert estimate(cfg).params == built
    assert Counter(param_shapes(shape_of(cfg.model))) == Counter(
        tuple(p.shape) for p in model.parameters()
    )


@pytest.mark.parametrize("name", MODELS)
def test_step_flops_count_every_linear_layer_of_the_built_model(name):
    """Forward = 2 FLOPs per weight of every linear layer but the LM head per token of
    prompt + input + target, the head's on the target + 1 positions that predict it, + the
    attention scores and context over the whole sequence; a step of the frozen model = 2
    forwards (activation backward only)."""
    keys = conf(name)
    model = meta_model(keys)
    head = model.get_output_embeddings()
    linear = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not head
    )
    cfg = job_config(name)
    seq = 100 + 512 + 8  # prompt_len + rte's input limit + the stand-in target limit
    attention = keys["num_layers"] * 4 * seq * seq * keys["num_heads"] * keys["d_kv"]
    forward = 2 * seq * linear + 2 * (8 + 1) * head.weight.numel() + attention
    job = estimate(cfg)
    assert job.flops_per_step == 2 * 32 * forward
    assert job.total_flops == 30_000 * job.flops_per_step
    assert job.step_tokens == 32 * seq  # every token goes through the one stack


TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
)
TINY_CONFIGS = {
    "gpt_neox": lambda: GPTNeoXConfig(**TINY),
    "qwen2": lambda: Qwen2Config(**TINY, num_key_value_heads=2),
    "llama": lambda: LlamaConfig(**TINY, num_key_value_heads=2),
}


@pytest.mark.parametrize("kind", sorted(TINY_CONFIGS))
def test_flops_equal_torchs_flop_counter_on_a_tiny_model(kind, tmp_path):
    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_config(TINY_CONFIGS[kind](), attn_implementation="eager")
    backbone.config.save_pretrained(tmp_path)  # its config.json: the shape a model.path gives
    shape = shape_of(ModelConfig(size="tiny", family="causal", path=str(tmp_path)))
    assert shape.model_type == kind
    assert count_params(shape) == sum(p.numel() for p in backbone.parameters())
    p, batch, t_in, t_out = 5, 3, 7, 4
    model = PromptedCausalLM(backbone.eval(), SoftPrompt(torch.randn(p, 32)))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (batch, t_in), generator=gen)
    labels = torch.randint(3, 97, (batch, t_out), generator=gen)

    with FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids), labels)
    assert counter.get_total_flops() == batch * forward_flops(shape, p + t_in, t_out)

    with FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids), labels)[0].backward()
    # backward of a frozen model ≈ the forward again (input gradients only); attention's
    # backward is twice its forward, a larger share of so small a model than of a real one
    # (GPT-NeoX's here: 5.3 % over, with the LM head on the target positions only)
    expected = 2 * batch * forward_flops(shape, p + t_in, t_out)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.06)


def test_the_shape_keys_say_which_biases():
    """The schema has no bias key: plain MLP = GPT-NeoX, gated = Llama, or Qwen2 by name."""
    pythia, qwen, smol = (
        causal_shape_of(compose_config(f"model={m}").model)
        for m in ("pythia_160m", "qwen2_5_0b5", "smollm2_135m")
    )
    assert (pythia.model_type, qwen.model_type, smol.model_type) == ("gpt_neox", "qwen2", "llama")
    assert (qwen.num_kv_heads, qwen.kv, qwen.inner) == (2, 128, 896)


def test_a_causal_job_prints_its_own_tokens_and_needs_no_lm_adaptation(capsys):
    cfg = compose_config("model=pythia_160m", "objective=next_token", "task=rte")
    line = describe(estimate(cfg))
    assert "params 162,322,944" in line and "encoder" not in line
    assert line.endswith("n = 19,840 tokens/step)")  # 32 × (100 + 512 + 8)
    # a T5 job of the same lengths keeps its words
    assert "n = 19,584 encoder tokens/step)" in describe(estimate(compose_config("task=rte")))
    # the objective axis of T5 on a causal model: priced, but no LM adaptation to run first
    adapt = compose_config("model=pythia_160m", "objective=lm_adapt", "lm_adapt_steps=1000")
    assert adaptation_costs([adapt]) == []
    # a sweep over both families says what its n counts
    assert main(["-m", "model=small,pythia_70m", "task=rte"]) == 0
    out = capsys.readouterr().out
    assert "for n tokens (T5: encoder tokens) a step" in out and "lm adaptation" not in out
    assert main(["-m", "model=pythia_70m,qwen2_5_0b5", "objective=instruct", "task=rte"]) == 0
    out = capsys.readouterr().out
    assert "for n tokens a step" in out and "encoder" not in out


def test_lora_on_a_causal_model_is_priced_by_its_layers(capsys):
    """Qwen2.5-7B, [q, v] at r 8 in its 28 layers: q 3584→3584, v 3584→512 (4 kv heads of
    128); Pythia-160M's fused q/k/v (768→2304) once per layer however many of q, k, v."""
    assert main(["model=qwen2_5_7b", "objective=instruct", "method=lora"]) == 0
    expected = 28 * 8 * ((3584 + 3584) + (3584 + 512))
    assert f"method=lora: {expected:,} LoRA weights trained" in capsys.readouterr().out
    pythia = causal_shape_of(job_config("pythia_160m").model)
    for roles in (["q"], ["q", "k", "v"]):
        priced = sum(math.prod(m) for m in lora_shapes(pythia, roles, 8))
        assert priced == 12 * 8 * (768 + 2304)
    # a role the architecture has no layer for: refused when the config is read
    assert (
        main(
            ["model=qwen2_5_7b", "objective=instruct", "method=lora", "method.target_modules=[wi]"]
        )
        == 2
    )
    assert "a qwen2 LM has no wi (its MLP is gated" in capsys.readouterr().err


def test_cost_cli_prices_a_pythia_job():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "repro.cost", "model=pythia_160m", "objective=next_token"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    job, total = proc.stdout.splitlines()
    assert job.startswith("dry run superglue-pythia_160m-next_token-p100-class_label-s0: 8 task(s)")
    assert "params 162,322,944" in job and " GPU-h at " in job and "tokens/step)" in job
    hours = float(total.split("total: ")[1].split(" GPU-h")[0])
    assert hours > 0 and math.isfinite(hours)
