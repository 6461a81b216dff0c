"""The toy world: span corruption on hand examples, the shipped checkpoints, a short prompt-tuning
run that beats the majority class, and (slow) the rebuild command end to end."""

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from repro.config import to_config
from repro.run import checkpoint_for, run_experiment
from repro.toyworld import world
from repro.toyworld.span_corruption import noise_spans, span_corruption, uncorrupt

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MODELS = ROOT / "repro" / "toy_models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
VOCAB = 600  # 500 SentencePiece pieces + 100 sentinels


# --- span corruption -------------------------------------------------------------------------


def test_span_corruption_hand_example():
    tokens = list(range(10, 30))  # 20 tokens: round(20 * 0.15) = 3 noise tokens in 1 span
    inputs, targets = span_corruption(tokens, np.random.default_rng(0), vocab_size=VOCAB)
    sentinel = VOCAB - 1  # <extra_id_0> is the top id
    assert inputs.count(sentinel) == 1 and targets[0] == sentinel
    assert inputs[-1] == 1 and targets[-1] == 1  # both end with eos
    noise = targets[1:-1]
    assert len(noise) == 3
    # the span sits where the sentinel is, and the targets carry exactly its tokens
    at = inputs.index(sentinel)
    assert tokens[at : at + 3] == noise
    assert inputs[:-1] == [*tokens[:at], sentinel, *tokens[at + 3 :]]
    assert uncorrupt(inputs, targets, VOCAB) == tokens


@pytest.mark.parametrize("length, n_noise, n_spans", [(20, 3, 1), (100, 15, 5), (128, 19, 6)])
def test_noise_counts_and_sentinel_order(length, n_noise, n_spans):
    for seed in range(20):
        spans = noise_spans(length, np.random.default_rng(seed))
        assert len(spans) == n_spans
        assert sum(e - s for s, e in spans) == n_noise
        assert spans[0][0] >= 1  # a kept span comes first, as in T5
        assert all(
            e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(spans)
        )  # disjoint, not adjacent
        tokens = list(range(3, 3 + length))
        inputs, targets = span_corruption(tokens, np.random.default_rng(seed), vocab_size=VOCAB)
        sentinels = [t for t in inputs if t >= VOCAB - 100]
        assert sentinels == [
            VOCAB - 1 - k for k in range(n_spans)
        ]  # <extra_id_0>, <extra_id_1>, ...
        assert [t for t in targets if t >= VOCAB - 100] == sentinels
        assert uncorrupt(inputs, targets, VOCAB) == tokens


def test_span_corruption_rejects_a_one_token_segment():
    with pytest.raises(ValueError, match=">= 2 tokens"):
        noise_spans(1, np.random.default_rng(0))


# --- the world's data ------------------------------------------------------------------------


def test_review_dev_holds_adjectives_the_train_split_never_shows():
    rng = random.Random(0)
    train = {
        w for _ in range(500) for w in world.review_record(rng, 0, "train")["sentence"].split()
    }
    dev = {
        w for _ in range(500) for w in world.review_record(rng, 0, "validation")["sentence"].split()
    }
    unseen = set(world.POSITIVE_WORDS[7:] + world.NEGATIVE_WORDS[7:])
    assert not unseen & train and unseen <= dev


def test_fact_labels_follow_the_passage():
    rng = random.Random(1)
    for i in range(200):
        r = world.fact_record(rng, i, "train")
        # the asked statement is in the passage iff the answer is yes
        q = (
            r["question"].removesuffix(" ?").split()
        )  # does <name> live in|like <v> / is <name> a <v>
        name, value = q[1], q[-1]
        facts = r["passage"].removesuffix(" .").split(" . ")
        stated = any(f.startswith(f"{name} ") and f.endswith(f" {value}") for f in facts)
        assert stated == bool(r["label"]), r


def test_corpus_is_seeded(tmp_path):
    from repro.toyworld.build import write_corpus

    a = write_corpus(tmp_path / "a.txt", 200, seed=0)
    assert a == write_corpus(tmp_path / "b.txt", 200, seed=0)
    assert a != write_corpus(tmp_path / "c.txt", 200, seed=1)


def test_label_words_occur_in_the_corpus():
    text = " ".join(world.documents(300))
    for word in (*world.REVIEW_LABELS, *world.FACT_LABELS):
        assert f" {word} " in f" {text} "


# --- the shipped checkpoints -----------------------------------------------------------------


def _checkpoints():
    return [
        (size, key, rel)
        for size, m in MANIFEST["models"].items()
        for key, rel in m["checkpoints"].items()
    ]


@pytest.mark.parametrize("size, key, rel", _checkpoints())
def test_shipped_checkpoint_loads_with_manifest_param_count(size, key, rel):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(MODELS / rel)
    assert sum(p.numel() for p in model.parameters()) == MANIFEST["models"][size]["params"]
    cfg = model.config
    assert cfg.feed_forward_proj == "gated-gelu" and cfg.scale_decoder_outputs is False  # T5.1.1
    assert cfg.d_model == MANIFEST["models"][size]["shape"]["d_model"]
    tok = AutoTokenizer.from_pretrained(MODELS / rel)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == cfg.vocab_size == VOCAB
    assert tok.convert_tokens_to_ids("<extra_id_0>") == VOCAB - 1


def test_model_configs_match_the_manifest():
    from omegaconf import OmegaConf

    import repro.config  # noqa: F401  (registers the ${repro_dir:} resolver)

    for size, m in MANIFEST["models"].items():
        conf = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{size}.yaml"), resolve=True)
        assert conf["params"] == m["params"]
        assert conf["d_model"] == m["shape"]["d_model"]
        for objective, path in conf["checkpoints"].items():
            assert Path(path).is_relative_to(MODELS), (size, objective, path)
            assert (Path(path) / "config.json").exists(), (size, objective, path)


def test_shipped_size_stays_small():
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 16 * 2**20, f"repro/toy_models is {total / 2**20:.1f} MB"


# --- prompt tuning on a shipped checkpoint ---------------------------------------------------


def toy_config(tmp_path, *overrides):
    """experiment=toy with the shipped checkpoints addressed absolutely (pytest's cwd may vary)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "experiment=toy",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"paths.root={tmp_path}",
                f"paths.lm_adapt_dir={MODELS}",
                *overrides,
            ],
        )
    cfg = to_config(cfg)
    cfg.model.checkpoints = {k: str(ROOT / v) for k, v in cfg.model.checkpoints.items()}
    return cfg


def test_toy_experiment_picks_the_shipped_checkpoints(tmp_path):
    cfg = toy_config(tmp_path, "model=toy_small")
    assert checkpoint_for(cfg) == str(MODELS / "toy_small" / "step_500")
    cfg = toy_config(tmp_path, "model=toy_small", "lm_adapt_steps=50")
    assert checkpoint_for(cfg) == str(MODELS / "toy_small" / "step_50")
    cfg = toy_config(tmp_path, "model=toy_small", "lm_adapt_steps=0")
    assert checkpoint_for(cfg) == str(MODELS / "toy_small" / "span_corruption")
    cfg = toy_config(tmp_path, "model=toy_large", "objective=span_corruption_sentinel")
    assert checkpoint_for(cfg) == str(MODELS / "toy_large" / "span_corruption")
    assert cfg.init.population == 500 and cfg.task.name == "toy_review"


# experiment=toy's own budget (100 steps, batch 16) with a 5-token prompt on the largest toy model:
# in results/toy it scores 66-72 on toy_review's 200 dev examples (majority class: 51.5).
BEATS_MAJORITY = ("model=toy_large", "prompt_len=5", "task.max_eval_examples=100")


def test_short_prompt_tuning_beats_the_majority_class(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(tmp_path, *BEATS_MAJORITY)
    assert run_experiment(cfg, tmp_path / "run")["status"] == "finished"
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["n_eval"] == 100 and result["checkpoint"].endswith("toy_large/step_500")
    rows = [
        json.loads(line)
        for line in (tmp_path / "cache/toy-data" / cfg.task.name / "validation.jsonl")
        .read_text()
        .splitlines()
    ]
    rows = rows[:100]
    majority = 100 * max(sum(r["label"] == c for r in rows) for c in (0, 1)) / len(rows)
    assert result["score"] > majority + 10, (result["score"], majority)


def test_effect_verdicts():
    from repro.toyworld.report import verdict

    assert verdict((60.0, 2.0), (50.0, 3.0)) == "yes"  # 10 > 2 + 3
    assert verdict((54.0, 2.0), (50.0, 3.0)) == "within noise"
    assert verdict((50.0, 2.0), (50.0, 3.0)) == "no"
    assert verdict((52.25, 0.0), (40.0, 1.0), floor=52.25) == "no"  # the majority class
    assert verdict((float("nan"), 0.0), (40.0, 1.0)) == "n/a"


# --- the toy sweeps --------------------------------------------------------------------------

TOY_SWEEPS = {
    "fig3a_prompt_len": ("prompt_len", [1, 5, 20, 100, 150]),
    "fig3b_init": ("init", ["random_uniform", "sampled_vocab", "class_label"]),
    "fig3c_objective": ("objective", ["span_corruption", "span_corruption_sentinel", "lm_adapt"]),
    "fig3d_lm_adapt_steps": ("lm_adapt_steps", [0, 50, 250, 500]),
}


@pytest.mark.parametrize("stem", sorted(TOY_SWEEPS))
def test_toy_sweep_composes_with_shipped_checkpoints(stem):
    from omegaconf import OmegaConf

    axis, values = TOY_SWEEPS[stem]
    path = ROOT / "sweeps" / "toy" / f"{stem}.yaml"
    assert (
        f"python -m repro.run -m --config-dir sweeps/toy --config-name {stem}" in path.read_text()
    )
    search = f"hydra.searchpath=[file://{CONF}]"
    with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
        raw = compose(stem, overrides=[search], return_hydra_config=True)
        params = OmegaConf.to_container(raw.hydra.sweeper.params)
        assert params["model"] == "toy_small,toy_base,toy_large"
        assert params["task"] == "toy_review,toy_fact" and params["seed"] == "0,1,2"
        assert params[axis] == ",".join(map(str, values))
        seen = set()
        for value in values:
            cfg = compose(stem, overrides=[search, "model=toy_large", f"{axis}={value}"])
            cfg = to_config(cfg)
            assert cfg.axes[axis] == value and cfg.sweep_name == "toy_figure3"
            assert cfg.trainer.steps == 100 and cfg.paths.lm_adapt_dir == str(MODELS)
            ckpt = checkpoint_for(cfg)
            assert (ROOT / ckpt / "config.json").exists(), ckpt
            seen.add(cfg.name)
    assert len(seen) == len(values)  # one run directory per value


# --- the rebuild command ---------------------------------------------------------------------


@pytest.mark.slow
def test_rebuild_command_end_to_end(tmp_path):
    from transformers import T5ForConditionalGeneration

    from repro.toyworld.__main__ import main

    out = tmp_path / "toy_models"
    args = ["build", "-o", str(out), "--pretrain-steps", "3", "--lm-adapt-steps", "1,2,3",
            "--n-docs", "1500", "--n-lm-docs", "200"]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["models"]) == ["toy_small", "toy_base", "toy_large"]
    assert manifest["command"].startswith("python -m repro.toyworld build -o ")
    assert manifest["objectives"]["span_corruption"]["steps"] == 3
    assert (
        manifest["corpus"]["pretrain_docs"] == 1500
        and len(manifest["corpus"]["pretrain_sha256"]) == 64
    )
    for size, m in manifest["models"].items():
        assert set(m["checkpoints"]) == {
            "span_corruption",
            "lm_adapt_1",
            "lm_adapt_2",
            "lm_adapt_3",
        }
        for rel in m["checkpoints"].values():
            model = T5ForConditionalGeneration.from_pretrained(out / rel)
            assert sum(p.numel() for p in model.parameters()) == m["params"]
        # the same shapes and counts as the shipped ones
        assert m["params"] == MANIFEST["models"][size]["params"]
        lm = json.loads((out / size / "step_3" / "manifest.json").read_text())
        assert lm["step"] == 3 and lm["source"] == f"{size}/span_corruption"
