"""method=lora on a decoder-only backbone (repro.causal.LoraCausalLM, repro.lora): T5's roles
(q, k, v, o, wi, wi_0, wi_1, wo) reach the layers of each architecture, our model computes what
peft's own PeftModel computes from the same adapter, the estimate counts what peft builds, a job
runs, resumes and is scored back as it ran, and what an architecture lacks is refused in one
line. Tiny random GPT-NeoX, Llama and Qwen2 configs built here; no network."""

import json
import math
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from peft import PeftModel
from safetensors.torch import load_file
from test_bad_input import assert_one_error, run_cli
from test_causal import CONFIGS, SHAPE, batch
from test_causal_job import tiny_causal_dir as tiny_causal_dir
from test_methods import state_of
from test_run import smoke_config
from transformers import AutoModelForCausalLM, Qwen2Config

import repro.run
from repro.causal import LoraCausalLM
from repro.estimate_causal import _from_config_json, lora_shapes
from repro.job.experiment import run_experiment

ARCHITECTURES = {
    **CONFIGS,
    "qwen2": lambda: Qwen2Config(
        **SHAPE,
        num_key_value_heads=2,  # grouped-query: k and v narrower than q
        intermediate_size=64,
        max_position_embeddings=128,
        eos_token_id=2,
        pad_token_id=0,
    ),
}


def backbone(kind: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(ARCHITECTURES[kind]()).eval()


def adapted(model) -> dict[str, int]:
    """{module path within a decoder layer: how many layers adapt it} of a LoRA model."""
    counts: dict[str, int] = {}
    for name, _ in model.backbone.named_parameters():
        if ".lora_A." in name:
            module = name.split(".lora_A.")[0].split(".layers.")[1].split(".", 1)[1]
            counts[module] = counts.get(module, 0) + 1
    return counts


# (architecture, roles, the modules peft must adapt in every layer): written out here, not
# read from repro.lora's table, so a wrong entry there fails
ROLE_CASES = [
    ("gpt_neox", ["q", "v"], {"attention.query_key_value"}),  # peft's default for gpt_neox
    ("gpt_neox", ["q", "k", "v"], {"attention.query_key_value"}),  # the fused layer, once
    ("gpt_neox", ["k", "o"], {"attention.query_key_value", "attention.dense"}),
    ("gpt_neox", ["wi", "wo"], {"mlp.dense_h_to_4h", "mlp.dense_4h_to_h"}),
    ("llama", ["q", "v"], {"self_attn.q_proj", "self_attn.v_proj"}),
    ("llama", ["k", "o"], {"self_attn.k_proj", "self_attn.o_proj"}),
    ("llama", ["wi_0", "wi_1", "wo"], {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}),
    ("qwen2", ["q", "k", "v", "o"], {f"self_attn.{x}_proj" for x in "qkvo"}),
    ("qwen2", ["wi_1"], {"mlp.up_proj"}),
]


@pytest.mark.parametrize(("kind", "roles", "modules"), ROLE_CASES)
def test_each_role_adapts_its_architectures_layer(kind, roles, modules):
    model = LoraCausalLM(backbone(kind), r=2, target_modules=roles)
    layers = model.backbone.config.num_hidden_layers
    assert adapted(model) == dict.fromkeys(modules, layers)


@pytest.mark.parametrize(
    ("kind", "roles", "refused"),
    [("gpt_neox", ["q", "wi_0"], "wi_0"), ("llama", ["wi"], "wi"), ("qwen2", ["v", "wi"], "wi")],
)
def test_a_role_the_architecture_lacks_is_refused_and_the_backbone_kept(kind, roles, refused):
    model = backbone(kind)
    before = state_of(model)
    with pytest.raises(ValueError, match=rf"a {kind} LM has no {refused} \(its MLP is"):
        LoraCausalLM(model, target_modules=roles)
    assert state_of(model).keys() == before.keys()  # nothing injected


def test_an_architecture_without_a_role_table_is_refused():
    from transformers import GPT2Config

    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="does not know the layers of a 'gpt2' causal LM"):
        LoraCausalLM(gpt2)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_loss_and_logits_equal_pefts_model_loaded_from_our_adapter(kind, tmp_path):
    """Our LoRA model and PeftModel.from_pretrained of the adapter it saved, on one batch
    (left-padded inputs, right-padded targets): the same loss and target logits."""
    roles = ["q", "v", "o", "wo"]
    ours = LoraCausalLM(backbone(kind), r=4, alpha=8, target_modules=roles, seed=3)
    with torch.no_grad():  # B is zero at init: give the adapter something to say
        for name, p in ours.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ours.save_adapter(tmp_path / "adapter")
    theirs = PeftModel.from_pretrained(backbone(kind), tmp_path / "adapter").eval()
    ids, mask, labels = batch()
    with torch.no_grad():
        loss, logits = ours.eval()(ids, mask, labels)
        full_ids = torch.cat([ids, labels.clamp(min=0)], dim=1)
        full_mask = torch.cat([mask, (labels != -100).long()], dim=1)
        lm_labels = torch.cat([torch.full_like(ids, -100), labels], dim=1)
        out = theirs(input_ids=full_ids, attention_mask=full_mask, labels=lm_labels)
        plain = backbone(kind)(input_ids=full_ids, attention_mask=full_mask, labels=lm_labels)
    start = ids.shape[1] - 1
    keep = labels != -100
    torch.testing.assert_close(loss, out.loss, rtol=1e-5, atol=1e-6)
    theirs_logits = out.logits[:, start : start + labels.shape[1]].float()
    torch.testing.assert_close(logits[keep], theirs_logits[keep], rtol=1e-5, atol=1e-5)
    assert abs(float(plain.loss) - float(loss)) > 1e-3  # the adapter does change the output


@pytest.mark.parametrize(
    ("kind", "roles"),
    [
        ("gpt_neox", ["q", "v"]),
        ("gpt_neox", ["q", "k", "v", "o", "wi", "wo"]),
        ("llama", ["q", "v"]),
        ("llama", ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]),
        ("qwen2", ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]),
    ],
)
def test_the_estimate_counts_the_lora_weights_peft_builds(kind, roles):
    model = backbone(kind)
    shape = _from_config_json(model.config.to_dict())
    priced = sum(math.prod(s) for s in lora_shapes(shape, roles, 4))
    built = LoraCausalLM(model, r=4, target_modules=roles)
    lora = [p for n, p in built.backbone.named_parameters() if "lora_" in n]
    assert priced == sum(p.numel() for p in lora) > 0
    assert priced == sum(p.numel() for p in built.trainable_parameters())


# --- the job --------------------------------------------------------------------------------

JOB = (
    "method=lora",
    "model.family=causal",
    "objective=next_token",
    "trainer.steps=8",
    "trainer.eval_every=4",
    "trainer.log_every=2",
    "task.max_eval_examples=16",
)


def lora_config(root, tiny_t5_dir, tiny_causal_dir, *overrides):
    """The smoke experiment as a causal LoRA job on the tiny GPT-NeoX."""
    return smoke_config(root, tiny_t5_dir, f"model.path={tiny_causal_dir}", *JOB, *overrides)


def lora_args(root, tiny_causal_dir, *overrides) -> list[str]:
    """``python -m repro.run``'s arguments for the same job."""
    paths = [f"paths.root={root}", f"paths.cache_dir={root / 'cache'}"]
    return ["experiment=smoke", f"model.path={tiny_causal_dir}", *paths, *JOB, *overrides]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_causal_dir):
    """``python -m repro.run experiment=smoke method=lora model.family=causal ...`` (the CLI,
    Hydra included, in this process) on the tiny GPT-NeoX: (its arguments, its run dir)."""
    root = tmp_path_factory.mktemp("lora-causal")
    args = lora_args(root, tiny_causal_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["repro.run", *args])
        try:
            repro.run.cli()
        except SystemExit as exit_:
            assert exit_.code in (0, None), exit_.code
        finally:
            GlobalHydra.instance().clear()
    (result,) = (root / "runs").rglob("result.json")
    return args, result.parent


def test_a_causal_lora_run_writes_its_adapter_and_result(lora_run, tiny_causal_dir):
    _, run_dir = lora_run
    assert run_dir.name.endswith("-lora-s0")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "finished"
    assert (result["method"], result["family"], result["prompt_len"]) == ("lora", "causal", None)
    # the default roles [q, v]: GPT-NeoX's fused query_key_value, A [8, 32] B [96, 8], 2 layers
    assert result["trainable_params"] == 2 * 8 * (32 + 96)
    for kept in ("best", "last"):
        config = json.loads((run_dir / kept / "adapter_config.json").read_text())
        assert config["target_modules"] == ["attention.query_key_value"]
        assert config["task_type"] == "CAUSAL_LM" and config["r"] == 8
        weights = load_file(run_dir / kept / "adapter_model.safetensors")
        assert sum(t.numel() for t in weights.values()) == result["trainable_params"]
        assert not (run_dir / kept / "model.safetensors").exists()  # the adapter alone
    from repro.backbone import load_backbone

    peft = PeftModel.from_pretrained(load_backbone(tiny_causal_dir), run_dir / "best")
    b = [p for n, p in peft.named_parameters() if "lora_B" in n]
    assert len(b) == 2 and all(p.abs().sum() > 0 for p in b)  # trained, loaded by peft


def test_a_finished_causal_lora_run_is_skipped_on_relaunch(lora_run, monkeypatch, capsys):
    args, run_dir = lora_run
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*.safetensors"))}
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "(already finished: skipped)" in out, out + err
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*.safetensors"))} == before


def test_the_trained_run_scores_as_the_run_did(lora_run, tiny_causal_dir):
    from repro.backbone import load_tokenizer
    from repro.evaluate import evaluate
    from repro.family import CAUSAL
    from repro.job.task import prepare_task
    from repro.trained import load_scorer, read_run

    _, run_dir = lora_run
    run = read_run(run_dir)
    scorer, _ = load_scorer(run)
    assert isinstance(scorer, LoraCausalLM) and not scorer.training
    best = load_file(run_dir / "best" / "adapter_model.safetensors")
    inside = {n.replace(".default", ""): p for n, p in scorer.peft.named_parameters()}
    assert best and all(torch.equal(inside[k], v) for k, v in best.items())  # best/'s adapter
    result = json.loads((run_dir / "result.json").read_text())
    tokenizer = load_tokenizer(tiny_causal_dir)
    data = prepare_task(run.cfg, run.task.name, tokenizer, family=CAUSAL)
    metrics, _ = evaluate(
        scorer,
        tokenizer,
        data.task,
        data.dev_examples,
        data.dev_tokens.input_ids,
        max_new_tokens=result["max_target_length"],
    )
    assert metrics == result["metrics"]


def test_a_stopped_causal_lora_run_resumes_to_the_same_adapter(
    tmp_path, tiny_t5_dir, tiny_causal_dir
):
    whole = lora_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "method.dropout=0.1")
    assert run_experiment(whole, tmp_path / "a")["status"] == "finished"
    stopped = lora_config(
        tmp_path, tiny_t5_dir, tiny_causal_dir, "method.dropout=0.1", "trainer.stop_after_steps=3"
    )
    assert run_experiment(stopped, tmp_path / "b")["status"] == "interrupted"  # at step 3
    assert run_experiment(stopped, tmp_path / "b")["status"] == "interrupted"  # 3 → 6
    assert run_experiment(stopped, tmp_path / "b")["status"] == "finished"  # 6 → 8
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in "ab")
    assert (a["metrics"], a["best_step"], a["score"]) == (b["metrics"], b["best_step"], b["score"])
    for name in ("best", "last"):
        wa, wb = (load_file(tmp_path / d / name / "adapter_model.safetensors") for d in "ab")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


# read from the tiny GPT-NeoX's config.json (d_model 32, fused q/k/v 32→96, MLP 32→64)
CONFIG_MISTAKES = [
    (
        ["method.target_modules=[q,wi_0]"],
        ["method.target_modules=['q', 'wi_0']: a gpt_neox LM has no wi_0 (its MLP is not gated"],
    ),
    (
        ["method.r=1000"],
        [
            "method.r=1000 is larger than every width of the layers it adapts (q 32→96, v 32→96)",
            "choose 1 <= method.r <= 96 (<= 32 for every layer to use it)",
        ],
    ),
]


@pytest.mark.parametrize("dry_run", ["false", "true"])
@pytest.mark.parametrize(
    ("overrides", "fragments"), CONFIG_MISTAKES, ids=[c[0][0] for c in CONFIG_MISTAKES]
)
def test_lora_mistakes_on_a_causal_lm_are_refused_when_the_config_is_read(
    monkeypatch, capsys, tmp_path, tiny_t5_dir, tiny_causal_dir, overrides, fragments, dry_run
):
    def load_model(*_):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("repro.job.experiment.load_model", load_model)
    args = lora_args(tmp_path, tiny_causal_dir, *overrides, f"dry_run={dry_run}")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_error(code, err, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
