"""The switches for large backbones, each on CPU with the tiny model: bf16 loaded directly,
activation checkpointing (the frozen backbone's prompt still gets the same gradient), SDPA
attention = eager, device_map and trust_remote_code reach from_pretrained."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

import repro.run  # noqa: F401  (registers the schema and the run_name resolver)
from repro.backbone import load_backbone, set_dropout
from repro.job.experiment import run_experiment
from repro.model import PromptedT5
from repro.prompts import SoftPrompt, init_prompt
from repro.resolve import load_config
from tests.test_run import CONF

INPUTS = ["premise: The cat sat on the mat. hypothesis: a dog ran", "question: who sat?"]
TARGETS = ["not_entailment", "True"]


def batch(tokenizer):
    enc = tokenizer(INPUTS, return_tensors="pt", padding=True)
    labels = tokenizer(TARGETS, return_tensors="pt", padding=True).input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    return enc.input_ids, enc.attention_mask, labels


def prompted(tiny_t5_dir, **load_kwargs) -> PromptedT5:
    backbone = load_backbone(tiny_t5_dir, **load_kwargs)
    weight = init_prompt("random_uniform", backbone.get_input_embeddings().weight, 5, seed=0)
    return PromptedT5(backbone, SoftPrompt(weight))


def prompt_grad(model: PromptedT5, tokenizer, seed: int = 0) -> tuple[torch.Tensor, float]:
    model.zero_grad()
    torch.manual_seed(seed)  # same dropout masks in both runs
    loss, _ = model(*batch(tokenizer))
    loss.backward()
    return model.prompt.weight.grad.clone(), loss.item()


def test_bf16_is_loaded_directly_no_fp32_parameter_at_any_point(tiny_t5_dir, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    seen = {}
    real = AutoModelForSeq2SeqLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForSeq2SeqLM, "from_pretrained", spy)
    model = load_backbone(tiny_t5_dir, dtype="bfloat16")
    assert seen["dtype"] is torch.bfloat16  # cast while reading, not after an fp32 load
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(b.dtype != torch.float32 for b in model.buffers())


def test_activation_checkpointing_gives_the_prompt_the_same_gradient(tiny_t5_dir, tokenizer):
    plain = prompted(tiny_t5_dir).train()
    ckpt = prompted(tiny_t5_dir, gradient_checkpointing=True).train()
    for model in (plain, ckpt):
        set_dropout(model, 0.1)  # dropout on: the recomputation must replay the same masks
    flag = "is_activation_checkpointing"  # transformers 5 (formerly is_gradient_checkpointing)
    flag = flag if hasattr(plain.backbone, flag) else "is_gradient_checkpointing"
    assert getattr(ckpt.backbone, flag) and not getattr(plain.backbone, flag)
    grad_plain, loss_plain = prompt_grad(plain, tokenizer)
    grad_ckpt, loss_ckpt = prompt_grad(ckpt, tokenizer)
    assert grad_plain.abs().sum() > 0
    assert loss_ckpt == pytest.approx(loss_plain, rel=1e-6)
    # equal up to float32 summation order (a missed or doubled path would be off by ~100 %)
    scale = grad_plain.abs().max().item()
    torch.testing.assert_close(grad_ckpt, grad_plain, rtol=1e-4, atol=1e-5 * scale)
    assert all(p.grad is None for p in ckpt.backbone.parameters())  # still frozen

    # and it really recomputes: one more forward's worth of FLOPs in a training step
    flops = []
    for model in (plain, ckpt):
        with FlopCounterMode(display=False) as counter:
            model(*batch(tokenizer))[0].backward()
        flops.append(counter.get_total_flops())
    assert flops[1] > 1.3 * flops[0]


def test_sdpa_attention_equals_eager(tiny_t5_dir, tokenizer):
    eager = prompted(tiny_t5_dir, attn_implementation="eager").eval()
    sdpa = prompted(tiny_t5_dir, attn_implementation="sdpa").eval()
    assert sdpa.backbone.config._attn_implementation == "sdpa"
    assert eager.backbone.config._attn_implementation == "eager"
    _, logits_e = eager(*batch(tokenizer))
    _, logits_s = sdpa(*batch(tokenizer))
    torch.testing.assert_close(logits_s, logits_e, rtol=1e-4, atol=1e-5)
    grad_e, _ = prompt_grad(eager, tokenizer)
    grad_s, _ = prompt_grad(sdpa, tokenizer)
    torch.testing.assert_close(grad_s, grad_e, rtol=1e-4, atol=1e-6)


def test_unsupported_attention_is_a_clear_error(tiny_t5_dir):
    with pytest.raises(ValueError, match=r"model.attn_implementation='flash_attention_2' is not"):
        load_backbone(tiny_t5_dir, attn_implementation="flash_attention_2")


def test_run_passes_the_scale_keys_to_from_pretrained(tmp_path, tiny_t5_dir, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    calls = []
    real = AutoModelForSeq2SeqLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForSeq2SeqLM, "from_pretrained", spy)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = load_config(
            compose(
                config_name="config",
                overrides=[
                    "experiment=smoke",
                    f"model.path={tiny_t5_dir}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    "trainer.steps=2",
                    "trainer.eval_every=2",
                    "task.max_eval_examples=8",
                    "model.device_map=cpu",
                    "model.attn_implementation=sdpa",
                    "model.dtype=bfloat16",
                    "model.gradient_checkpointing=true",
                ],
            )
        )
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    (kwargs,) = calls
    assert kwargs["device_map"] == "cpu"
    assert kwargs["attn_implementation"] == "sdpa"
    assert kwargs["dtype"] is torch.bfloat16
    assert kwargs["trust_remote_code"] is False  # never on unless the user sets it
    # none of these switches changes what the run computes: not part of its fingerprint
    saved = json.loads((tmp_path / "run/fingerprint.json").read_text())
    assert "device_map" not in saved["model"] and "gradient_checkpointing" not in saved["model"]
    assert saved["model"]["attn_implementation"] == "sdpa"  # numerics may differ slightly


# --- launchers ---------------------------------------------------------------------------------


def test_slurm_launcher_composes_with_its_documented_keys():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb) == (1, 8, 64)
    assert launcher.timeout_min == 1440 and launcher.signal_delay_s == 120
    assert launcher.max_num_timeout > 0  # a job hitting its time limit is requeued
    assert launcher.additional_parameters.requeue is True


@pytest.mark.slow  # 3 processes (sweep + 2 jobs) start torch: ~50 s on 2 busy cores
def test_two_job_smoke_multirun_through_the_local_launcher(tmp_path, tiny_t5_dir):
    from tests.test_run import ROOT, run_cli

    proc = run_cli(
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.gpus_per_node=0",
        "experiment=smoke",
        "prompt_len=3,4",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.steps=6",
        "trainer.eval_every=3",
        "task.max_eval_examples=16",
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = tmp_path / "multirun/smoke"
    assert (sweep / ".submitit").is_dir()  # really went through submitit's executor
    for p in (3, 4):
        result = json.loads(
            (sweep / f"toy_keyword-tiny-lm_adapt100k-p{p}-class_label-s0/result.json").read_text()
        )
        assert (result["status"], result["steps"], result["prompt_len"]) == ("finished", 6, p)
        assert result["trainable_params"] == p * 32


def test_the_source_never_unpickles_code_or_trusts_remote_code():
    import re
    from pathlib import Path

    sources = sorted((Path(__file__).resolve().parents[1] / "repro").rglob("*.py"))
    calls = 0
    for path in sources:
        text = path.read_text()
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            calls += 1
            assert "weights_only=True" in call, f"{path}: torch.load({call})"
        assert "trust_remote_code=True" not in text, path
        assert "pickle.load" not in text, path
    assert calls >= 2  # the trainer's and lm_adapt's resume points
