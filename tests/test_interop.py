"""Prompts that travel: PEFT adapters both ways (PEFT is the oracle), the official code's .npy
prompts (into a d_model-768 model), text initialisation as PEFT does it, and scoring a given
prompt without training. Nothing here reads ../shared: every file is built in tmp."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import batch
from test_run import smoke_config

from repro.backbone import load_backbone
from repro.evaluate import score_prompt
from repro.export import export
from repro.interop import fit_prompt, prompt_identity, read_prompt
from repro.job.experiment import run_experiment
from repro.model import PromptedT5
from repro.prompts import SoftPrompt, init_prompt, save_prompt, text_token_ids

WIDE = 768  # T5 Base's d_model: the width of the official released prompts


@pytest.fixture(scope="module")
def wide_t5_dir(tmp_path_factory, tokenizer):
    """A random T5.1.1-shaped model of d_model 768 (1 layer, d_ff 64): Base's width, fast."""
    from transformers import T5ForConditionalGeneration

    from repro.tiny import tiny_t5_config

    out = tmp_path_factory.mktemp("wide") / "t5-768"
    torch.manual_seed(0)
    config = tiny_t5_config(len(tokenizer), d_model=WIDE, num_layers=1, num_heads=12, d_ff=64)
    T5ForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def official_like(length=100, width=WIDE, seed=0, dtype=np.float32):
    """An array shaped and scaled like the released prompts (std 32-52: T5's unscaled space)."""
    return (np.random.default_rng(seed).standard_normal((length, width)) * 40).astype(dtype)


def peft_of(tiny_t5_dir, **config):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    backbone = load_backbone(tiny_t5_dir, fused_gelu=False)  # stock transformers for PEFT
    return get_peft_model(backbone, PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, **config))


# --- PEFT: export -------------------------------------------------------------------------------


def test_export_to_peft_loads_and_gives_our_logits_and_greedy_outputs(
    tmp_path, tiny_t5_dir, tokenizer
):
    from peft import PeftModel

    prompt = torch.randn(7, 32, generator=torch.Generator().manual_seed(1)) * 3
    best = tmp_path / "run" / "best"  # as the trainer writes it
    save_prompt(prompt, best, backbone=str(tiny_t5_dir), init="class_label", task="rte", step=4)
    out = export(tmp_path / "run", "peft", tmp_path / "adapter")

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["num_transformer_submodules"] == 1
    # the tiny model, a local checkpoint: recorded relative to the adapter, never absolute
    assert (out / config["base_model_name_or_path"]).resolve() == tiny_t5_dir.resolve()
    assert not Path(config["base_model_name_or_path"]).is_absolute()
    assert (config["num_virtual_tokens"], config["token_dim"]) == (7, 32)
    assert (out / "adapter_model.safetensors").is_file()

    theirs = PeftModel.from_pretrained(load_backbone(tiny_t5_dir, fused_gelu=False), out).eval()
    ours = PromptedT5(load_backbone(tiny_t5_dir), SoftPrompt(read_prompt(best)[0])).eval()
    input_ids, mask, labels = batch(tokenizer)
    with torch.no_grad():
        _, logits = ours(input_ids, mask, labels)
        reference = theirs(input_ids=input_ids, attention_mask=mask, labels=labels).logits
    torch.testing.assert_close(logits, reference.float(), rtol=1e-5, atol=1e-5)
    ours_tokens = ours.generate(input_ids, mask, max_new_tokens=8)
    peft_tokens = theirs.generate(
        input_ids=input_ids, attention_mask=mask, max_new_tokens=8, do_sample=False
    )
    assert torch.equal(ours_tokens, peft_tokens)


# --- PEFT: import -------------------------------------------------------------------------------


@pytest.mark.parametrize("submodules", [None, 1], ids=["peft_default_two", "encoder_only"])
def test_peft_adapter_imports_as_the_rows_peft_puts_before_the_encoder(
    tmp_path, tiny_t5_dir, tokenizer, submodules
):
    extra = {} if submodules is None else {"num_transformer_submodules": submodules}
    theirs = peft_of(tiny_t5_dir, num_virtual_tokens=5, **extra).eval()
    rows = theirs.prompt_encoder["default"].embedding.weight
    assert rows.shape[0] == (2 if submodules is None else 1) * 5
    with torch.no_grad():
        rows.copy_(torch.randn(rows.shape, generator=torch.Generator().manual_seed(2)) * 4)
    theirs.save_pretrained(tmp_path / "adapter")

    prompt, meta = read_prompt(tmp_path / "adapter")
    assert prompt.dtype == torch.float32 and prompt.shape == (5, 32)
    assert torch.equal(prompt, rows[:5].detach())
    assert meta["format"] == "peft" and meta["backbone"] == str(tiny_t5_dir)

    # what PEFT computes with its adapter, ours computes with the imported prompt
    ours = PromptedT5(load_backbone(tiny_t5_dir), SoftPrompt(prompt)).eval()
    input_ids, mask, labels = batch(tokenizer)
    with torch.no_grad():
        reference = theirs(input_ids=input_ids, attention_mask=mask, labels=labels).logits
        torch.testing.assert_close(ours(input_ids, mask, labels)[1], reference, atol=1e-5, rtol=0)

    # imported as our prompt dir: prompt.safetensors + sidecar, readable as init.path
    out = export(tmp_path / "adapter", "repro", tmp_path / "imported")
    assert {p.name for p in out.iterdir()} == {"prompt.safetensors", "prompt.json"}
    again, sidecar = read_prompt(out)
    assert torch.equal(again, prompt) and sidecar["source_format"] == "peft"


# --- the official .npy prompts ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_official_npy_reads_as_fp32_rows(tmp_path, dtype):
    array = official_like(dtype=dtype)
    np.save(tmp_path / "rte.npy", array)
    prompt, meta = read_prompt(tmp_path / "rte.npy")
    assert prompt.shape == (100, WIDE) and prompt.dtype == torch.float32
    assert torch.equal(prompt, torch.from_numpy(array.astype(np.float32)))
    assert meta["format"] == "npy"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(768, np.float32), "shape (768,); a prompt is a non-empty 2-D"),
        (np.zeros((2, 100, 768), np.float32), "shape (2, 100, 768)"),
        (np.zeros((0, 768), np.float32), "shape (0, 768)"),
        (np.zeros((100, 768), np.int64), "holds int64 values; a prompt holds floats"),
        (np.full((3, 8), np.nan, np.float32), "non-finite values"),
        (np.array([{"a": 1}], dtype=object), "is not a readable .npy array"),
    ],
    ids=["1d", "3d", "empty", "ints", "nan", "pickled"],
)
def test_a_npy_that_is_no_prompt_is_refused_naming_it(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(ValueError, match="bad.npy") as err:
        read_prompt(tmp_path / "bad.npy")
    assert message in str(err.value)


def test_a_width_mismatch_names_both_widths():
    with pytest.raises(ValueError) as err:
        fit_prompt(torch.zeros(100, WIDE), 100, 32, "init.path=rte.npy")
    assert "init.path=rte.npy holds a prompt of width 768" in str(err.value)
    assert "the model's d_model is 32" in str(err.value)


def test_official_prompt_maps_into_a_d_model_768_model_and_is_scored_without_training(
    tmp_path, wide_t5_dir
):
    array = official_like()
    np.save(tmp_path / "toy_keyword.npy", array)
    cfg = smoke_config(
        tmp_path,
        wide_t5_dir,
        "init=from_file",
        "init.path=" + str(tmp_path / "${task.name}.npy"),  # one file per task, as released
        "prompt_len=100",
        "trainer.steps=0",
        "task.max_eval_examples=16",
    )
    run_dir = tmp_path / "scored"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "finished", summary
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["steps"], result["best_step"], result["n_train"]) == (0, 0, 0)
    assert result["init"] == "from_file" and result["trainable_params"] == 100 * WIDE

    # best/ is the file's prompt, row for row, in fp32
    best, _ = read_prompt(run_dir / "best")
    assert best.dtype == torch.float32 and torch.equal(best, torch.from_numpy(array))

    # and the library function scores it the same (what other tools call)
    from transformers import AutoTokenizer

    from repro.tasks import get_task
    from repro.tasks.base import data_dir_for

    task = get_task("toy_keyword")
    backbone = load_backbone(wide_t5_dir)
    model = PromptedT5(backbone, SoftPrompt(torch.from_numpy(array)))
    embeds, _ = model.encoder_inputs(torch.tensor([[5, 6, 1]]), torch.ones(1, 3))
    assert torch.equal(embeds[0, :100], torch.from_numpy(array))  # in front of the encoder
    scored = score_prompt(
        torch.from_numpy(array),
        backbone,
        AutoTokenizer.from_pretrained(wide_t5_dir),
        task,
        data_dir=data_dir_for(task, None, cfg.paths.cache_dir),
        max_examples=16,
    )
    assert scored.metrics == result["metrics"] and scored.score == result["score"]
    assert scored.n_examples == 16 and len(scored.predictions) == 16


def test_prompt_identity_is_the_content_not_the_place(tmp_path):
    np.save(tmp_path / "a.npy", official_like(4, 8))
    (tmp_path / "moved").mkdir()
    np.save(tmp_path / "moved" / "a.npy", official_like(4, 8))
    np.save(tmp_path / "b.npy", official_like(4, 8, seed=1))
    assert prompt_identity(tmp_path / "a.npy") == prompt_identity(tmp_path / "moved" / "a.npy")
    assert prompt_identity(tmp_path / "a.npy") != prompt_identity(tmp_path / "b.npy")


# --- text initialisation ------------------------------------------------------------------------

TEXT = "Classify whether the review is positive or negative"


@pytest.mark.parametrize("length", [3, 25, 60], ids=["cut", "exact", "repeated"])
def test_text_init_equals_peft_text_init(tiny_t5_dir, tokenizer, length):
    table = load_backbone(tiny_t5_dir).get_input_embeddings().weight
    ours = init_prompt(
        "text", table, length, seed=0, text_ids=text_token_ids(tokenizer, TEXT), text_rule="peft"
    )
    for submodules in (1, 2):  # PEFT's seq2seq default fills 2P rows; the encoder gets [0, P)
        theirs = peft_of(
            tiny_t5_dir,
            num_virtual_tokens=length,
            num_transformer_submodules=submodules,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=TEXT,
            tokenizer_name_or_path=str(tiny_t5_dir),
        )
        rows = theirs.prompt_encoder["default"].embedding.weight[:length]
        assert torch.equal(ours, rows.detach()), (length, submodules)
    ids = text_token_ids(tokenizer, TEXT)
    assert len(ids) == 25 and ids[-1] == tokenizer.eos_token_id  # PEFT's ids carry T5's eos
    if length > len(ids):  # repeated whole, eos included, then cut
        assert torch.equal(ours[len(ids)], table[ids[0]])


def test_official_text_rule_drops_eos_cuts_and_fills_with_random_uniform(tiny_t5_dir, tokenizer):
    table = load_backbone(tiny_t5_dir).get_input_embeddings().weight
    ids = text_token_ids(tokenizer, TEXT, rule="official")
    assert tokenizer.eos_token_id not in ids
    prompt = init_prompt(
        "text", table, len(ids) + 5, seed=0, text_ids=ids, text_rule="official", low=0.0, high=0.01
    )
    assert torch.equal(prompt[: len(ids)], table[ids])
    rest = prompt[len(ids) :]
    assert rest.min() >= 0.0 and rest.max() < 0.01  # the fallback initialiser's range
    cut = init_prompt("text", table, 2, seed=0, text_ids=ids, text_rule="official")
    assert torch.equal(cut, table[ids[:2]])


def test_released_prompt_claims_name_registered_tasks_and_their_metrics():
    import csv
    from pathlib import Path

    from repro.tasks import get_task

    path = Path(__file__).resolve().parents[1] / "results/paper/released_prompts.csv"
    rows = list(csv.DictReader(path.open()))
    claims = {(r["task"], r["metric"]): float(r["claimed"]) for r in rows}
    assert claims == {
        ("rte", "accuracy"): 68.6,
        ("mrpc", "f1"): 89.7,
        ("mrpc", "accuracy"): 85.3,
        ("sst2", "accuracy"): 95.07,
    }
    for task, metric in claims:  # a check run's result.json reports each under this name
        assert metric in get_task(task).metric_names
    assert {(r["prompt_len"], r["backbone"]) for r in rows} == {("100", "google/t5-base-lm-adapt")}


def test_a_run_with_text_init_starts_from_the_texts_embeddings(tmp_path, tiny_t5_dir, tokenizer):
    cfg = smoke_config(
        tmp_path, tiny_t5_dir, "init=text", f"init.text={TEXT}", "trainer.steps=0",
        "task.max_eval_examples=8",
    )  # fmt: skip
    assert run_experiment(cfg, tmp_path / "run")["status"] == "finished"
    table = load_backbone(tiny_t5_dir).get_input_embeddings().weight
    ids = text_token_ids(tokenizer, TEXT)  # 25 ids with eos; prompt_len 20: cut
    best, _ = read_prompt(tmp_path / "run")
    assert torch.equal(best, table[ids[:20]])


def test_a_trained_prompt_round_trips_through_peft_and_scores_the_same(tmp_path, tiny_t5_dir):
    common = ["task.max_eval_examples=32", "trainer.eval_every=10"]
    trained = smoke_config(tmp_path, tiny_t5_dir, "trainer.steps=10", *common)
    assert run_experiment(trained, tmp_path / "trained")["status"] == "finished"
    export(tmp_path / "trained", "peft", tmp_path / "adapter")  # best/ → PEFT
    export(tmp_path / "adapter", "repro", tmp_path / "back")  # PEFT → ours
    assert torch.equal(read_prompt(tmp_path / "back")[0], read_prompt(tmp_path / "trained")[0])

    scored = smoke_config(
        tmp_path, tiny_t5_dir, "init=from_file", f"init.path={tmp_path / 'adapter'}",
        "trainer.steps=0", *common,
    )  # fmt: skip
    assert run_experiment(scored, tmp_path / "scored")["status"] == "finished"
    before, after = (
        json.loads((tmp_path / d / "result.json").read_text()) for d in ("trained", "scored")
    )
    assert after["metrics"] == before["metrics"] and after["max_target_length"] == 8


def test_run_dirs_made_before_these_inits_keep_their_fingerprint(tmp_path, tiny_t5_dir):
    from repro.rundir import fingerprint

    # no new key unless it applies: an older run dir's fingerprint.json still matches
    init = fingerprint(smoke_config(tmp_path, tiny_t5_dir))["init"]
    assert set(init) == {"name", "low", "high", "population"}
    text = fingerprint(smoke_config(tmp_path, tiny_t5_dir, "init=text", "init.text=hi"))["init"]
    assert (text["text"], text["text_rule"]) == ("hi", "peft")
