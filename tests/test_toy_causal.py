"""The toy world's decoder-only ladder (repro/toyworld/causal_build.py, docs/toy_world.md): the
shipped checkpoints load as causal LMs with the T5 toys' tokenizer, the model configs say what
they hold, the size budget, pre-training made them better than chance, and a tiny rebuild through
the command is deterministic and leaves the T5 toys' manifest keys as they were."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from repro.toyworld import causal_build
from repro.toyworld.causal_build import heldout_segments, next_token_loss

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MODELS = ROOT / "repro" / "toy_models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
CAUSAL = MANIFEST["causal"]
STEPS = CAUSAL["config"]["steps"]
T5_TOKENIZER = MODELS / "toy_small" / "step_500"
VOCAB = 600
SIZES = tuple(causal_build.SIZES)


def _conf(size: str) -> dict:
    from omegaconf import OmegaConf

    import repro.config  # noqa: F401  (registers the ${repro_dir:} resolver)

    return OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{size}.yaml"), resolve=True)


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_the_ladder_grows_and_ships_three_steps():
    assert list(CAUSAL["models"]) == list(SIZES) and len(SIZES) >= 3
    params = [CAUSAL["models"][s]["params"] for s in SIZES]
    assert all(b > 2 * a for a, b in itertools.pairwise(params)), params
    assert len(STEPS) >= 3 and sorted(STEPS) == STEPS
    for size in SIZES:
        assert sorted(p.name for p in (MODELS / size).iterdir()) == sorted(
            f"step_{s}" for s in STEPS
        )
        # every shipped step has its held-out loss and its zero-shot probe (chance 50)
        m = CAUSAL["models"][size]
        assert set(m["eval_loss"]) == set(m["probe"]) == {str(s) for s in STEPS}
        for scores in m["probe"].values():
            assert set(scores) == {"review", "review_rare", "fact"}
            assert all(0 <= v <= 100 for v in scores.values())


@pytest.mark.parametrize("size", SIZES)
def test_shipped_checkpoints_load_and_match_their_model_config(size):
    from transformers import AutoTokenizer

    conf = _conf(size)
    final = STEPS[-1]
    assert conf["size"] == size and conf["family"] == "causal" and conf["gated_mlp"] is False
    assert conf["lm_adapt_checkpoint_steps"] == final
    assert Path(conf["checkpoints"]["next_token"]) == MODELS / size / f"step_{final}"
    for step in STEPS:
        path = Path(conf["steps_checkpoint"].replace("{steps}", str(step)))
        assert path == MODELS / size / f"step_{step}" and (path / "config.json").exists()
        model = _load(path)
        tok = AutoTokenizer.from_pretrained(path)
        cfg = model.config
        assert cfg.is_encoder_decoder is False and cfg.model_type == "gpt_neox"
        assert sum(p.numel() for p in model.parameters()) == conf["params"]
        assert conf["params"] == CAUSAL["models"][size]["params"]
        shape = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads)
        assert shape == (conf["d_model"], conf["num_layers"], conf["num_heads"])
        assert cfg.hidden_size // cfg.num_attention_heads == conf["d_kv"]
        assert cfg.intermediate_size == conf["d_ff"]
        assert cfg.tie_word_embeddings is conf["tie_word_embeddings"] is False
        assert cfg.vocab_size == conf["vocab_size"] == len(tok) == VOCAB
        # the ids are the tokenizer's: pad 0, eos 1, and no bos (it has none)
        ids = (cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id)
        assert ids == (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, None)
        gen = model.generation_config
        assert (gen.pad_token_id, gen.eos_token_id) == (0, 1)
        # one vocabulary with the T5 toys: their tokenizer files, byte for byte
        for name in ("tokenizer.json", "tokenizer_config.json"):
            assert (path / name).read_bytes() == (T5_TOKENIZER / name).read_bytes(), name


def test_shipped_size_stays_small():
    def size_of(paths) -> int:
        return sum(f.stat().st_size for p in paths for f in [p, *p.rglob("*")] if f.is_file())

    total = size_of([MODELS])
    assert total < 16 * 2**20, f"repro/toy_models is {total / 2**20:.2f} MB"
    causal = size_of([MODELS / s for s in SIZES] + list(MODELS.glob("train_log_toy_causal*")))
    assert causal < 3.5 * 2**20, f"the causal toys are {causal / 2**20:.2f} MB"


def test_pretraining_beat_chance_on_fresh_text():
    """Mean next-token loss on world text no build reads (corpus seed 7): every final
    checkpoint far below its first and below ln(vocab) (a uniform guess); larger is better.
    The manifest's own numbers (seed 2 text) are what the shipped weights score now."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODELS / SIZES[0] / f"step_{STEPS[-1]}")
    fresh = heldout_segments(tok, 100, seed=7, length=128)
    cfg = CAUSAL["config"]
    recorded = heldout_segments(tok, cfg["eval_docs"], cfg["seed"] + 2, cfg["segment_length"])
    finals = []
    for size in SIZES:
        first, last = (_load(MODELS / size / f"step_{s}") for s in (STEPS[0], STEPS[-1]))
        loss_first, loss_last = next_token_loss(first, fresh), next_token_loss(last, fresh)
        assert loss_last < loss_first - 0.3, (size, loss_first, loss_last)
        assert loss_last < math.log(VOCAB) - 3, (size, loss_last)
        finals.append(loss_last)
        shipped = CAUSAL["models"][size]["eval_loss"][str(STEPS[-1])]
        assert next_token_loss(last, recorded) == pytest.approx(shipped, abs=1e-4)
    assert finals == sorted(finals, reverse=True), finals


def test_tiny_rebuild_through_the_command_is_deterministic(tmp_path):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from repro.toyworld.__main__ import main

    # an existing manifest's T5 keys stay as they were
    t5 = {k: v for k, v in MANIFEST.items() if k != "causal"}
    args = ["build-causal", "--sizes", "toy_causal_small", "--n-docs", "120", "--eval-docs", "20",
            "--probe-items", "10"]  # fmt: skip
    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    try:
        for name, seed, steps in (("a", 0, "1 2 3"), ("b", 0, "1 2 3"), ("c", 1, "1")):
            out = tmp_path / name
            out.mkdir()
            (out / "manifest.json").write_text(json.dumps(t5, indent=1) + "\n")
            extra = ["--seed", str(seed), "--jobs", "1", "--steps", *steps.split()]
            assert main([*args, "-o", str(out), *extra]) == 0
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "causal"} == t5
    entry = manifest["causal"]
    assert entry["command"].startswith("python -m repro.toyworld build-causal --sizes ")
    assert entry["config"]["steps"] == [1, 2, 3] and list(entry["models"]) == ["toy_causal_small"]
    m = entry["models"]["toy_causal_small"]
    assert m["params"] == CAUSAL["models"]["toy_causal_small"]["params"]
    assert set(m["eval_loss"]) == {"1", "2", "3"}
    log = (tmp_path / "a" / "train_log_toy_causal_small.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3]
    weights = {
        name: [
            (tmp_path / name / "toy_causal_small" / f"step_{s}" / "model.safetensors").read_bytes()
            for s in (1, 2, 3)
            if (tmp_path / name / "toy_causal_small" / f"step_{s}").exists()
        ]
        for name in "abc"
    }
    assert weights["a"] == weights["b"]  # same seed, same weights
    assert weights["a"][0] != weights["b"][1]  # a step changes them
    assert weights["c"][0] != weights["a"][0]  # another seed, other weights
    path = tmp_path / "a" / "toy_causal_small" / "step_3"
    assert _load(path).config.is_encoder_decoder is False
    assert len(AutoTokenizer.from_pretrained(path)) == VOCAB


def test_bad_steps_fail_with_one_line(capsys):
    from repro.toyworld.__main__ import main

    assert main(["build-causal", "--steps", "5", "3", "-o", "/nonexistent/never"]) == 2
    assert "steps must be positive and increasing" in capsys.readouterr().err


def test_a_t5_rebuild_keeps_the_causal_ladders_manifest_entry(tmp_path):
    """`python -m repro.toyworld build` merges its manifest with the one on disk: the causal
    entry `build-causal` wrote stays, whatever the T5 settings."""
    import json

    from repro.toyworld.build import _merge_manifest

    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"config": {"seed": 0}, "corpus": "a", "causal": {"models": 3}}))
    for config in ({"seed": 0}, {"seed": 1}):  # the same settings, and other ones
        new = {"config": {**config, "sizes": []}, "corpus": "a", "models": {}, "command": "c"}
        assert _merge_manifest(path, new)["causal"] == {"models": 3}
