"""What comes after training, on a decoder-only backbone (issue 29): model tuning, zero-shot
transfer, export to a PEFT causal prompt-tuning adapter and back, and the one-line refusal of
ensembling. A tiny random GPT-NeoX built here (tests/test_causal_job.py's); no network."""

import json

import pytest
import torch
from test_causal_job import causal_config
from test_causal_job import tiny_causal_dir as tiny_causal_dir

from repro.job.experiment import run_experiment

EVAL = ("task.max_eval_examples=16", "trainer.eval_every=10")


@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory, tiny_t5_dir, tiny_causal_dir):
    root = tmp_path_factory.mktemp("causal-runs")
    cfg = causal_config(root, tiny_t5_dir, tiny_causal_dir, "trainer.steps=10", *EVAL)
    assert run_experiment(cfg, root / "prompt")["status"] == "finished"
    return root / "prompt"


def test_model_tuning_trains_every_weight_of_a_causal_lm(tmp_path, tiny_t5_dir, tiny_causal_dir):
    from repro.backbone import load_backbone

    cfg = causal_config(
        tmp_path, tiny_t5_dir, tiny_causal_dir, "method=model", "trainer.steps=4", *EVAL
    )
    run_dir = tmp_path / "model"
    assert run_experiment(cfg, run_dir)["status"] == "finished"
    result = json.loads((run_dir / "result.json").read_text())
    backbone = load_backbone(tiny_causal_dir)
    total = sum(p.numel() for p in backbone.parameters())
    assert result["family"] == "causal" and result["trainable_params"] == total
    tuned = load_backbone(run_dir / "best")  # a checkpoint of its own, tokenizer included
    moved = [
        not torch.equal(a, b)
        for a, b in zip(tuned.parameters(), backbone.parameters(), strict=True)
    ]
    assert sum(moved) > len(moved) // 2


def test_a_causal_run_transfers_zero_shot_to_another_task(prompt_run, tmp_path, monkeypatch):
    from repro.transfer import TRANSFER_DIR
    from repro.transfer import main as transfer

    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    assert transfer([str(prompt_run), "--to", "toy_polarity", "--max-examples", "8"]) == 0
    result = json.loads((prompt_run / TRANSFER_DIR / "toy_polarity" / "result.json").read_text())
    assert result["family"] == "causal" and result["eval_task"] == "toy_polarity"
    assert 0.0 <= result["score"] <= 100.0


def test_export_to_a_peft_causal_adapter_gives_our_logits_and_imports_back(
    prompt_run,
    tmp_path,
    tiny_causal_dir,
):
    from peft import PeftModel

    from repro.backbone import load_backbone, load_tokenizer
    from repro.causal import PromptedCausalLM
    from repro.export import export
    from repro.interop import read_prompt
    from repro.prompts import SoftPrompt

    out = export(prompt_run, "peft", tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM"  # read from the run's result.json
    assert "AutoModelForCausalLM" in (out / "README.md").read_text()
    prompt = read_prompt(prompt_run)[0]
    theirs = PeftModel.from_pretrained(load_backbone(tiny_causal_dir, fused_gelu=False), out)
    ours = PromptedCausalLM(load_backbone(tiny_causal_dir), SoftPrompt(prompt))
    tokenizer = load_tokenizer(tiny_causal_dir)
    ids = torch.tensor([tokenizer("a b c", add_special_tokens=False).input_ids])
    labels = torch.tensor([[5, 6, tokenizer.eos_token_id]])
    with torch.no_grad():
        _, logits = ours.eval()(ids, torch.ones_like(ids), labels)
        full = torch.cat([ids, labels], dim=1)
        reference = theirs.eval()(input_ids=full, attention_mask=torch.ones_like(full)).logits
    # PEFT's logits cover [prompt; input; target]; ours those that predict each target token
    start = prompt.shape[0] + ids.shape[1] - 1
    torch.testing.assert_close(logits, reference[:, start : start + 3].float())
    back = export(out, "repro", tmp_path / "back")
    assert torch.equal(read_prompt(back)[0], prompt)
    # a bare .npy names no backbone: --family says what it is in front of
    export(prompt_run, "npy", tmp_path / "p.npy")
    causal = export(
        tmp_path / "p.npy", "peft", tmp_path / "npy-adapter", base_model="x/y", family="causal"
    )
    assert json.loads((causal / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"


@pytest.mark.slow
def test_the_exported_adapter_scores_as_the_run_did(
    prompt_run,
    tmp_path,
    tiny_t5_dir,
    tiny_causal_dir,
):
    from repro.export import export

    adapter = export(prompt_run, "peft", tmp_path / "adapter")
    cfg = causal_config(
        tmp_path, tiny_t5_dir, tiny_causal_dir, "init=from_file", f"init.path={adapter}",
        "trainer.steps=0", *EVAL,
    )  # fmt: skip
    assert run_experiment(cfg, tmp_path / "scored")["status"] == "finished"
    trained, scored = (
        json.loads((d / "result.json").read_text()) for d in (prompt_run, tmp_path / "scored")
    )
    assert scored["metrics"] == trained["metrics"]


@pytest.mark.slow
def test_causal_runs_ensemble_in_one_batched_pass_that_repeats_each_runs_score(
    tmp_path, tiny_t5_dir, tiny_causal_dir
):
    """Three seeds of one causal task scored by rank: each prompt's score in the one batched
    pass (rows left-padded as its own evaluation padded them) is the score its run recorded;
    the vote is written beside them; generate mode runs too."""
    import pandas as pd

    from repro.ensemble import main as ensemble

    runs = []
    for seed in (0, 1, 2):
        overrides = ("trainer.steps=10", f"seed={seed}", "task.eval_mode=rank", *EVAL)
        cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, *overrides)
        assert run_experiment(cfg, tmp_path / f"s{seed}")["status"] == "finished"
        runs.append(tmp_path / f"s{seed}")
    own = [json.loads((r / "result.json").read_text())["score"] for r in runs]
    assert max(own) > 0  # prompts that score: a real check
    for mode in ("rank", "generate"):
        assert ensemble([*map(str, runs), "-o", str(tmp_path / mode), "--mode", mode]) == 0
        rows = pd.read_csv(tmp_path / f"{mode}.csv").set_index("ensemble_row")
        assert 0.0 <= rows.loc["ensemble", "score"] <= 100.0
        if mode == "rank":  # what the runs were scored in
            assert rows.loc["average", "score"] == pytest.approx(sum(own) / 3)
            assert rows.loc["best", "score"] == pytest.approx(max(own))
