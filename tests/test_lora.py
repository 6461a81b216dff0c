"""method=lora (repro.model.LoraT5, peft): only the LoRA matrices train, best/ holds the adapter
alone and reloads for evaluation, a stopped run resumes exactly, bad keys are one line."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_bad_input import run_cli
from test_methods import (
    SHORT,
    assert_resumes_exactly,
    refused_writing_nothing,
    state_of,
    trainer_steps,
)
from test_run import smoke_config

from repro.backbone import load_backbone, load_tokenizer
from repro.config import Config
from repro.estimate import estimate
from repro.job.experiment import run_experiment
from repro.methods import check_lora_rank
from repro.model import LoraT5


def test_lora_trains_only_its_matrices_and_the_backbone_stays_bit_equal(tiny_t5_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_t5_dir)
    backbone = load_backbone(tiny_t5_dir)
    loaded = state_of(backbone)
    model = LoraT5(backbone, r=4, alpha=8, target_modules=["q", "v"])
    model.out_dir = tmp_path / "lora"
    lora_before = {
        n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_" in n
    }
    trainer_steps(model, tokenizer)
    after = model.backbone.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
    assert base.keys() == loaded.keys()
    assert all(torch.equal(v, loaded[k]) for k, v in base.items())  # the backbone: bit-equal
    lora_after = dict(model.backbone.named_parameters())
    moved = [n for n in lora_before if not torch.equal(lora_before[n], lora_after[n])]
    assert any("lora_B" in n for n in moved) and any("lora_A" in n for n in moved)
    # 2 matrices per q and v of every attention: r · (in + out) each
    cfg = backbone.config
    inner = cfg.num_heads * cfg.d_kv
    attentions = cfg.num_layers + 2 * cfg.num_decoder_layers
    expected = attentions * 2 * 4 * (cfg.d_model + inner)
    assert sum(p.numel() for p in model.trainable_parameters()) == expected
    saved = load_file(tmp_path / "lora/best/adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == expected  # the adapter alone
    assert not (tmp_path / "lora/best/model.safetensors").exists()


def test_adapter_config_lists_the_target_modules_sorted(tiny_t5_dir, tmp_path):
    """peft keeps target_modules as a set and wrote it in hash order: ["v", "q"] or ["q", "v"]
    between identical runs, so their adapter_config.json differed."""
    model = LoraT5(load_backbone(tiny_t5_dir), r=2, target_modules=["q", "v", "o"])
    config = model.peft.peft_config["default"]
    assert isinstance(config.target_modules, set)  # iterated in this process's hash order
    config.target_modules = ["v", "q", "o"]  # one such order, fixed for the test
    model.save_adapter(tmp_path / "a")
    assert json.loads((tmp_path / "a/adapter_config.json").read_text())["target_modules"] == [
        "o",
        "q",
        "v",
    ]


def test_lora_run_writes_its_result_and_best_reloads_for_evaluation(tmp_path, tiny_t5_dir):
    cfg = smoke_config(tmp_path, tiny_t5_dir, "method=lora", *SHORT)
    assert cfg.name == "toy_keyword-tiny-lm_adapt100k-lora-s0"
    run_dir = tmp_path / "run"
    assert run_experiment(cfg, run_dir)["status"] == "finished"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["method"] == "lora" and result["prompt_len"] is None
    backbone = load_backbone(tiny_t5_dir)
    lora = LoraT5(backbone, r=8, alpha=16, target_modules=["q", "v"])
    assert result["trainable_params"] == sum(p.numel() for p in lora.trainable_parameters())
    assert json.loads((run_dir / "best/adapter_config.json").read_text())["r"] == 8

    from repro.evaluate import evaluate
    from repro.job.task import prepare_task
    from repro.trained import load_scorer, read_run

    run = read_run(run_dir)
    assert run.method == "lora"
    scorer, backbone = load_scorer(run)
    tokenizer = load_tokenizer(tiny_t5_dir)
    data = prepare_task(cfg, "toy_keyword", tokenizer)
    metrics, _ = evaluate(
        scorer,
        tokenizer,
        data.task,
        data.dev_examples,
        data.dev_tokens.input_ids,
        max_new_tokens=result["max_target_length"],
    )
    assert metrics == result["metrics"]


def test_lora_resumes_exactly_after_an_interruption(tmp_path, tiny_t5_dir):
    overrides = ["method=lora", *SHORT, "method.dropout=0.1"]
    assert_resumes_exactly(tmp_path, tiny_t5_dir, overrides, "adapter_model.safetensors")


def test_cost_prices_the_adapter_and_its_optimizer_state(tmp_path, tiny_t5_dir):
    prompt, lora, model = (
        estimate(smoke_config(tmp_path, tiny_t5_dir, f"method={m}"))
        for m in ("prompt", "lora", "model")
    )
    backbone = load_backbone(tiny_t5_dir)
    adapter = sum(p.numel() for p in LoraT5(backbone).trainable_parameters())
    assert lora.trainable_params == adapter
    assert lora.params == model.params  # the same backbone, frozen
    assert 0 < lora.saved_bytes < model.saved_bytes
    assert lora.tuned_state_bytes >= 2 * 4 * adapter  # fp32 weights + gradients (+ moments)
    assert lora.memory_bytes < model.memory_bytes
    assert "method=lora" in __import__("repro.cost.report", fromlist=["describe"]).describe(lora)
    assert isinstance(prompt.config, Config)


LORA_MISTAKES = [
    # (overrides, fragments of the one error line)
    (["method.r=4"], ["method.r only applies to method=lora; method=prompt trains no LoRA"]),
    (["method=model", "method.alpha=8"], ["method.alpha only applies to method=lora"]),
    (["method=lora", "method.r=0"], ["method.r", "0"]),
    (["method=lora", "method.target_modules=[q,x]"], ["method.target_modules", "wi_0"]),
    # r wider than every layer it adapts (tiny: d_model 32, inner 32, d_ff 64): it claimed
    # the directory and trained the adapter, without a word, before
    (
        ["method=lora", "method.r=1000000"],
        [
            "method.r=1000000 is larger than every width of the layers it adapts "
            "(q 32→32, v 32→32)",
            "choose 1 <= method.r <= 32",
        ],
    ),
    (
        ["method=lora", "method.target_modules=[q,wi_0]", "method.r=65"],
        ["method.r=65", "(q 32→32, wi_0 32→64)", "1 <= method.r <= 64 (<= 32 for every"],
    ),
    (["method=lora", "method.r=-1"], ["method.r must be an integer >= 1; got -1"]),
    (["method=lora", "prompt_len=20"], ["prompt_len=20 only applies to method=prompt"]),
]


@pytest.mark.parametrize(
    ("args", "fragments"), LORA_MISTAKES, ids=[" ".join(c[0]) for c in LORA_MISTAKES]
)
def test_lora_mistakes_are_one_line_and_write_nothing(
    monkeypatch, capsys, tmp_path, tiny_t5_dir, args, fragments
):
    refused_writing_nothing(monkeypatch, capsys, tmp_path, tiny_t5_dir, args, fragments)


def test_lora_rank_against_the_widths_of_the_layers_it_adapts():
    widths = {"q": (32, 32), "wi_0": (32, 64)}
    assert check_lora_rank(32, widths) is None  # full rank of every layer: meant
    assert check_lora_rank(33, widths).startswith(
        "method.r=33 exceeds 32, the smallest width of the layers it adapts (q 32→32, wi_0 32→64)"
    )
    assert check_lora_rank(64, widths) is not None  # wi_0's wider side: warned, run
    with pytest.raises(ValueError, match=r"method.r=65 is larger than every width"):
        check_lora_rank(65, widths)
    assert check_lora_rank(10**6, {}) is None  # the shape unknown before loading: not checked


def test_a_lora_rank_above_a_layer_width_is_warned_about_as_the_job_starts(
    monkeypatch, capsys, tmp_path, tiny_t5_dir
):
    """method.r beyond the smallest adapted width ran without a word before."""
    args = [
        "experiment=smoke",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "method=lora",
        "method.target_modules=[q,wi_0]",
        "method.r=48",
        "trainer.steps=2",
        "trainer.eval_every=2",
    ]
    warning = "method.r=48 exceeds 32, the smallest width of the layers it adapts"
    code, out, err = run_cli(monkeypatch, capsys, *args, "dry_run=true")
    assert code == 0, err
    assert f"warning: {warning} (q 32→32, wi_0 32→64)" in out
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    (log,) = (tmp_path / "runs").glob("*lora_r48*/run.log")
    assert f"[WARNING] - {warning}" in log.read_text()


def test_a_prompt_scored_after_a_lora_run_on_a_shared_backbone_sees_no_adapter(tiny_t5_dir):
    """repro.transfer keeps one backbone per checkpoint across runs: a LoRA run scored first
    must leave no adapter inside it for the prompt run scored next."""
    from types import SimpleNamespace

    from repro.trained import Backbone, _lora_scorer, _prompt_scorer

    tokenizer = load_tokenizer(tiny_t5_dir)
    shared = Backbone(str(tiny_t5_dir), load_backbone(tiny_t5_dir).eval(), tokenizer)
    fresh = Backbone(str(tiny_t5_dir), load_backbone(tiny_t5_dir).eval(), tokenizer)
    prompt = torch.randn(3, shared.model.config.d_model, generator=torch.Generator().manual_seed(0))
    run = SimpleNamespace(best_prompt=lambda: prompt)
    ids, labels = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[8, 1]])

    def loss(model):
        with torch.no_grad():
            return model(ids, torch.ones_like(ids), labels)[0]

    expected = loss(_prompt_scorer(run, fresh))
    method = SimpleNamespace(r=4, alpha=8.0, dropout=0.0, target_modules=["q", "v"])
    lora = SimpleNamespace(cfg=SimpleNamespace(method=method), run_dir=Path("unused"))
    with pytest.MonkeyPatch.context() as patch:  # best/'s adapter: every B non-zero
        patch.setattr(LoraT5, "load_adapter", lambda self, _: [
            torch.nn.init.normal_(p) for n, p in self.backbone.named_parameters() if "lora_B" in n
        ])  # fmt: skip
        adapted = _lora_scorer(lora, shared)
    assert not torch.allclose(loss(adapted), expected)  # the adapter does change the output
    assert torch.equal(loss(_prompt_scorer(run, shared)), expected)


def test_a_sweep_over_lora_keys_gets_a_run_directory_per_setting():
    from repro.cost.plan import sweep_configs

    configs = sweep_configs(
        ["experiment=smoke", "method=lora", "method.r=8,4", "method.alpha=16,32"], multirun=True
    )
    names = [cfg.name.split("-")[-2] for cfg in configs]
    assert names == ["lora", "lora_a32", "lora_r4", "lora_r4_a32"]  # defaults: the plain name
    (wide,) = sweep_configs(["experiment=toy", "method=lora", "method.target_modules=[q,k,v,o]"])
    assert wide.name == "toy_review-toy_xl-lm_adapt-lm500-lora_qkvo-s0"


def test_only_a_lora_run_carries_lora_keys_and_fingerprints_stay_as_they_were(
    tmp_path, tiny_t5_dir
):
    """`--cfg job` showed method.r/alpha/dropout/target_modules on every run; old run dirs
    (their fingerprint, their config.yaml with those keys under any method) still match."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from test_run import CONF

    from repro.resolve import load_config
    from repro.rundir import fingerprint

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        shown = {
            m: OmegaConf.to_container(compose("config", overrides=[f"method={m}"]).method)
            for m in ("prompt", "model", "model_multitask", "lora")
        }
    assert shown["prompt"] == {"name": "prompt"} and shown["model"] == {"name": "model"}
    assert shown["model_multitask"] == {"name": "model_multitask"}
    lora_keys = {
        "name": "lora",
        "r": 8,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": ["q", "v"],
    }
    assert shown["lora"] == lora_keys
    prompt, model, lora = (
        smoke_config(tmp_path, tiny_t5_dir, f"method={m}") for m in ("prompt", "model", "lora")
    )
    # the fingerprints old run directories hold: no method (prompt), its name (model), all 5
    assert "method" not in fingerprint(prompt)
    assert fingerprint(model)["method"] == {"name": "model"}
    assert fingerprint(lora)["method"] == lora_keys
    for cfg in (prompt, model):  # a config.yaml written before: LoRA's keys under any method
        old = OmegaConf.structured(cfg)
        old = OmegaConf.to_container(old)
        old["method"] = {**lora_keys, "name": cfg.method.name}
        assert fingerprint(load_config(OmegaConf.create(old))) == fingerprint(cfg)
