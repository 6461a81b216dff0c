"""A decoder-only backbone through the whole job (issue 29): ``repro.run`` on a tiny random
GPT-NeoX built here (the tiny T5's SentencePiece tokenizer), its run directory, resume, both
eval modes, the results frame's ``family`` column, the checkpoint of a pre-training step, and
what the initialisers do on a causal LM's table. No network."""

import json

import pytest
import torch
from test_run import metric_lines, read_jsonl, smoke_config

from repro.job.experiment import run_experiment

CAUSAL = ("objective=next_token", "trainer.steps=20", "trainer.eval_every=10")
CAUSAL = (*CAUSAL, "trainer.log_every=5", "task.max_eval_examples=16", "prompt_len=4")


@pytest.fixture(scope="module")
def tiny_causal_dir(tmp_path_factory, tiny_t5_dir):
    """A random 2-layer GPT-NeoX (d_model 32) sharing the tiny T5's tokenizer. Weights drawn
    with std 0.3, not the default 0.02, under which a tiny model's logits are near-uniform and
    a prompt has nothing to steer."""
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    out = tmp_path_factory.mktemp("assets") / "tiny-causal"
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    GPTNeoXForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def causal_config(root, tiny_t5_dir, tiny_causal_dir, *overrides):
    return smoke_config(root, tiny_t5_dir, f"model.path={tiny_causal_dir}", *CAUSAL, *overrides)


def test_a_causal_run_trains_its_prompt_and_records_its_family(
    tmp_path, tiny_t5_dir, tiny_causal_dir
):
    cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir)
    run_dir = tmp_path / "run"
    assert run_experiment(cfg, run_dir)["status"] == "finished"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["family"] == "causal" and result["objective"] == "next_token"
    assert result["trainable_params"] == 4 * 32  # the prompt, nothing else
    assert result["frozen_params"] > 0 and set(result["metrics"]) == {"accuracy"}
    for kept in ("init", "best", "last"):
        assert (run_dir / kept / "prompt.safetensors").is_file()
    losses = [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "train"]
    assert len(losses) == 4 and losses[-1] < losses[0]  # the prompt learns something


@pytest.mark.slow
def test_a_stopped_causal_run_resumes_to_the_same_numbers(tmp_path, tiny_t5_dir, tiny_causal_dir):
    whole = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir)
    assert run_experiment(whole, tmp_path / "whole")["status"] == "finished"
    parts = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "trainer.stop_after_steps=10")
    assert run_experiment(parts, tmp_path / "parts")["status"] == "interrupted"
    assert run_experiment(parts, tmp_path / "parts")["status"] == "finished"
    assert metric_lines(tmp_path / "parts" / "metrics.jsonl") == metric_lines(
        tmp_path / "whole" / "metrics.jsonl"
    )
    best = [json.loads((tmp_path / d / "result.json").read_text()) for d in ("whole", "parts")]
    assert best[0]["metrics"] == best[1]["metrics"] and best[0]["best_step"] == best[1]["best_step"]


def test_rank_mode_ranks_the_labels_as_causal_targets(tmp_path, tiny_t5_dir, tiny_causal_dir):
    """Rank classification scores each label as training makes targets (tokens + eos, no bos),
    and its predictions are labels only: the accuracy is that of the argmax label."""
    from repro.backbone import load_backbone, load_tokenizer
    from repro.causal import PromptedCausalLM, target_ids
    from repro.evaluate import predict
    from repro.prompts import SoftPrompt

    backbone, tokenizer = load_backbone(tiny_causal_dir), load_tokenizer(tiny_causal_dir)
    model = PromptedCausalLM(backbone, SoftPrompt(torch.randn(3, 32)))
    labels = ["positive", "negative"]
    inputs = [tokenizer(t, add_special_tokens=False).input_ids for t in ("a b c", "d")]
    ids = target_ids(tokenizer, labels)
    assert all(row[-1] == tokenizer.eos_token_id for row in ids)

    def alone() -> list[str]:
        out = []
        for x in inputs:
            one = torch.tensor([x])
            scores = model.score_candidates(one, torch.ones_like(one), ids)
            out.append(labels[int(scores.argmax())])
        return out

    # one at a time; batched (left-padded) where positions do not depend on the batch
    assert predict(model, tokenizer, inputs, mode="rank", candidates=labels, batch_size=1) == (
        alone()
    )
    model.positions = "unpadded"
    assert predict(model, tokenizer, inputs, mode="rank", candidates=labels) == alone()
    # a tokenizer that puts bos in front (Llama's): the candidates still carry none, and eos
    from test_causal import bpe_tokenizer

    llama_like, seen = bpe_tokenizer(adds_bos=True), []
    scorer = model.score_candidates
    model.score_candidates = lambda i, m, c: seen.append(c) or scorer(i, m, c)
    predict(model, llama_like, inputs, mode="rank", candidates=labels)
    assert seen[0] == target_ids(llama_like, labels) != [llama_like(w).input_ids for w in labels]
    assert all(row[0] != llama_like.bos_token_id for row in seen[0])
    cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "task.eval_mode=rank")
    assert run_experiment(cfg, tmp_path / "rank")["status"] == "finished"


def test_the_frame_has_a_family_column(tmp_path, tiny_t5_dir, tiny_causal_dir):
    from repro.collect.rundirs import collect_runs

    cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "trainer.steps=2")
    assert run_experiment(cfg, tmp_path / "sweep" / "causal")["status"] == "finished"
    t5 = smoke_config(tmp_path, tiny_t5_dir, "trainer.steps=2", "task.max_eval_examples=8")
    assert run_experiment(t5, tmp_path / "sweep" / "t5")["status"] == "finished"
    frame = collect_runs([tmp_path / "sweep"]).sort_values("run_dir")
    assert list(frame.columns)[:2] == ["family", "size"]
    assert frame["family"].tolist() == ["causal", "t5"]
    # a result.json from before the key is a T5 run's
    old = json.loads((tmp_path / "sweep" / "t5" / "result.json").read_text())
    del old["family"]
    (tmp_path / "sweep" / "t5" / "result.json").write_text(json.dumps(old))
    assert collect_runs([tmp_path / "sweep" / "t5"])["family"].tolist() == ["t5"]


def test_a_pre_training_step_names_its_checkpoint(tmp_path, tiny_t5_dir):
    """lm_adapt_steps on a causal LM with model.steps_checkpoint picks that step's checkpoint
    (Pythia's hub revisions step<N>); at the model's own count, checkpoints.next_token."""
    from repro.backbone import split_revision
    from repro.checkpoints import checkpoint_for

    pythia = (
        "model.path=null",
        "objective=next_token",
        "+model.checkpoints.next_token=EleutherAI/pythia-160m",
        "model.lm_adapt_checkpoint_steps=143000",
        "model.steps_checkpoint='EleutherAI/pythia-160m@step{steps}'",
    )
    at = lambda *o: checkpoint_for(smoke_config(tmp_path, tiny_t5_dir, *pythia, *o))  # noqa: E731
    assert at() == "EleutherAI/pythia-160m"
    assert at("lm_adapt_steps=1000") == "EleutherAI/pythia-160m@step1000"
    # each step has its run directory; the model's own step keeps the plain name
    named = lambda *o: smoke_config(tmp_path, tiny_t5_dir, *pythia, *o).name  # noqa: E731
    assert named() == "toy_keyword-tiny-next_token-p20-class_label-s0"
    assert named("lm_adapt_steps=1000") == "toy_keyword-tiny-next_token_step1000-p20-class_label-s0"
    assert split_revision("EleutherAI/pythia-160m@step1000") == (
        "EleutherAI/pythia-160m",
        "step1000",
    )
    assert split_revision(str(tmp_path)) == (str(tmp_path), None)
    with pytest.raises(ValueError, match="lm_adapt_steps=1000 only applies with objective="):
        smoke_config(tmp_path, tiny_t5_dir, "lm_adapt_steps=1000", "objective=next_token")


def test_the_embedding_scaled_uniform_spreads_as_the_table_does():
    from repro.prompts import init_prompt

    table = torch.randn(500, 64) * 0.02  # a causal LM's scale (T5's entries are ~10)
    fixed = init_prompt("random_uniform", table, 200, seed=0)
    scaled = init_prompt("random_uniform", table, 200, seed=0, scale="embedding")
    assert fixed.abs().max() > 0.45  # the paper's ±0.5, whatever the table
    bound = 3**0.5 * table.std().item()
    assert scaled.abs().max() <= bound
    assert scaled.std().item() == pytest.approx(table.std().item(), rel=0.05)
    with pytest.raises(ValueError, match="unknown init.scale 'wide'; allowed: fixed, embedding"):
        init_prompt("random_uniform", table, 4, seed=0, scale="wide")


def test_a_tokenizer_without_pad_pads_with_eos(tmp_path):
    from test_causal import bpe_tokenizer

    from repro.backbone import load_tokenizer

    tok = bpe_tokenizer(adds_bos=False)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token_id == loaded.eos_token_id is not None


def test_a_prompt_scores_on_a_causal_backbone(tmp_path, tiny_causal_dir, monkeypatch):
    """repro.evaluate.score_prompt encodes and decodes by the backbone's family."""
    from repro.backbone import load_backbone, load_tokenizer
    from repro.evaluate import score_prompt

    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))  # the generated task's files go there
    backbone, tokenizer = load_backbone(tiny_causal_dir), load_tokenizer(tiny_causal_dir)
    result = score_prompt(torch.zeros(3, 32), backbone, tokenizer, "toy_keyword", max_examples=8)
    assert result.n_examples == 8 and 0.0 <= result.score <= 100.0
    assert len(result.predictions) == 8


def test_packing_a_causal_lm_is_refused_in_one_line(tmp_path, tiny_t5_dir, tiny_causal_dir):
    """What the members share is refused for the pack (the packed launcher fails each member
    with the one line), before any directory is claimed."""
    from repro.cli import RunError
    from repro.pack.job import PackJob, run_pack

    cfgs = [
        causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, f"prompt_len={p}", f"name=p{p}")
        for p in (1, 2)
    ]
    jobs = [PackJob(c, tmp_path / "runs" / c.name) for c in cfgs]
    with pytest.raises(RunError, match="is a causal LM: packing puts several prompts in one T5"):
        run_pack(jobs)
    assert not list((tmp_path / "runs").rglob("fingerprint.json"))


@pytest.mark.slow
def test_a_packed_sweep_runs_a_causal_lms_jobs_one_by_one(tmp_path, tiny_t5_dir, tiny_causal_dir):
    """model.family=causal (the causal model files set it): the packed launcher's plan gives
    each job a pack of its own, which runs as under the basic launcher; the dry run says so."""
    from repro.pack.job import PackJob, run_pack
    from repro.pack.plan import describe_fit, plan_packs

    family = ("model.family=causal", "trainer.steps=2")
    cfgs = [
        causal_config(
            tmp_path, tiny_t5_dir, tiny_causal_dir, *family, f"prompt_len={p}", f"name=p{p}"
        )
        for p in (1, 2)
    ]
    assert plan_packs(cfgs) == [[0], [1]]
    assert describe_fit(cfgs[0]).startswith("packing: a causal LM's prompts have no packed model")
    for cfg in cfgs:
        (job,) = run_pack([PackJob(cfg, tmp_path / "runs" / cfg.name)])
        assert job.summary["status"] == "finished", job.summary


def test_a_separator_the_tokenizer_drops_is_said(tiny_t5_dir, caplog):
    """T5's SentencePiece (the toy causal ladder's) normalises "\\n" away: the target follows
    the input directly, and the log says so; a BPE tokenizer keeps it, silently."""
    from test_causal import bpe_tokenizer
    from transformers import AutoTokenizer

    from repro.causal import encode_causal
    from repro.tasks.base import Example

    examples = [Example("a b", "yes")]
    spm = AutoTokenizer.from_pretrained(tiny_t5_dir)
    with caplog.at_level("WARNING", logger="repro.causal"):
        enc = encode_causal(examples, spm, 16, 4)
    assert enc.input_ids[0] == spm("a b", add_special_tokens=False).input_ids
    assert "the separator '\\n' is no token for this tokenizer" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="repro.causal"):
        encode_causal(examples, bpe_tokenizer(adds_bos=False), 16, 4)
    assert caplog.text == ""
