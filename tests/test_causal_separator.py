"""``model.separator``: the text between a task's input and its target in a causal LM's
sequence (``repro.causal.encode_causal``), a config value that training, a finished run's
scoring and ``repro.evaluate.score_prompt`` all read; at its default a run's fingerprint is as
before the key (a T5 run refuses it: tests/test_bad_input.py). No network."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from test_causal_job import causal_config, tiny_causal_dir  # noqa: F401 (a fixture)
from transformers import AutoTokenizer

from repro.job.experiment import run_experiment
from repro.rundir import fingerprint
from repro.trained import encoded_inputs, eval_examples, read_run


def colon_ids(tokenizer) -> list[int]:
    ids = tokenizer(":", add_special_tokens=False)["input_ids"]
    assert ids  # the tiny tokenizer has tokens for it (and none for "\n")
    return ids


@pytest.mark.slow  # a module-scoped tiny causal LM (~5-10 s) and runs
def test_a_run_encodes_scores_and_records_its_separator(tmp_path, tiny_t5_dir, tiny_causal_dir):  # noqa: F811
    cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "model.separator=':'")
    run_dir = tmp_path / "run"
    assert run_experiment(cfg, run_dir)["status"] == "finished"
    run = read_run(run_dir)
    assert run.cfg.model.separator == ":"
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    examples = eval_examples(run)
    ids = encoded_inputs(run, examples, tokenizer)  # as the run was evaluated
    sep = colon_ids(tokenizer)
    assert ids and all(x[-len(sep) :] == sep for x in ids)
    plain = tokenizer([e.inputs for e in examples], add_special_tokens=False)["input_ids"]
    cut = [x[: len(y) - len(sep)] for x, y in zip(plain, ids, strict=True)]
    assert [x[: -len(sep)] for x in ids] == cut


@pytest.mark.slow  # a module-scoped tiny causal LM (~5-10 s) and runs
def test_the_fingerprint_holds_the_separator_only_when_it_is_not_the_default(
    tmp_path,
    tiny_t5_dir,
    tiny_causal_dir,  # noqa: F811
):
    default = fingerprint(causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir))
    assert "separator" not in default["model"]  # run dirs made before the key still match
    colon = fingerprint(causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "model.separator=:"))
    assert colon["model"]["separator"] == ":"


@pytest.mark.slow  # a module-scoped tiny causal LM (~5-10 s) and runs
def test_score_prompt_takes_the_separator(tmp_path, tiny_causal_dir, monkeypatch):  # noqa: F811
    import repro.family
    from repro.backbone import load_backbone, load_tokenizer
    from repro.evaluate import score_prompt

    backbone, tokenizer = load_backbone(str(tiny_causal_dir)), load_tokenizer(str(tiny_causal_dir))
    encoded = []
    real = repro.family.encode_causal

    def spy(examples, tokenizer, max_in, max_target, separator):
        out = real(examples, tokenizer, max_in, max_target, separator)
        encoded.append(out.input_ids)
        return out

    monkeypatch.setattr(repro.family, "encode_causal", spy)
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))  # the generated task's files go there
    kwargs = {"max_examples": 4, "mode": "rank"}
    score_prompt(torch.zeros(3, 32), backbone, tokenizer, "toy_keyword", **kwargs)
    score_prompt(torch.zeros(3, 32), backbone, tokenizer, "toy_keyword", separator=":", **kwargs)
    plain, colon = encoded
    assert [[*x, *colon_ids(tokenizer)] for x in plain] == colon


@pytest.mark.slow  # a module-scoped tiny causal LM (~5-10 s) and runs
def test_the_result_of_a_default_run_reads_as_before(tmp_path, tiny_t5_dir, tiny_causal_dir):  # noqa: F811
    """A run directory written before the key (its config.yaml has no model.separator) reads
    with the default, the newline."""
    cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "trainer.steps=0")
    run_dir = tmp_path / "run"
    assert run_experiment(cfg, run_dir)["status"] == "finished"
    config = run_dir / "config.yaml"
    saved = OmegaConf.load(config)
    del saved.model["separator"]
    OmegaConf.save(saved, config)
    assert read_run(run_dir).cfg.model.separator == "\n"
    assert json.loads((run_dir / "result.json").read_text())["family"] == "causal"


@pytest.mark.slow
def test_runs_of_different_separators_are_not_ensembled(tmp_path, tiny_t5_dir, tiny_causal_dir):  # noqa: F811
    from repro.ensemble import EnsembleError, ensemble_task
    from repro.trained import load_backbone_of

    runs = []
    for name, extra in (("newline", ()), ("colon", ("model.separator=:", "seed=1"))):
        cfg = causal_config(tmp_path, tiny_t5_dir, tiny_causal_dir, "trainer.steps=0", *extra)
        assert run_experiment(cfg, tmp_path / name)["status"] == "finished"
        runs.append(read_run(tmp_path / name))
    with pytest.raises(EnsembleError, match=r"end their inputs differently \(model.separator\)"):
        ensemble_task(runs, load_backbone_of(runs[0]))
