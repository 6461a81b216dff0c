"""The toy world: span corruption on hand examples, the shipped checkpoints, a short prompt-tuning
run that beats the majority class, and (slow) the rebuild command end to end."""

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from repro.checkpoints import checkpoint_for
from repro.cli import RunError
from repro.job.experiment import run_experiment
from repro.resolve import load_config
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


def _stated(passage: str, question: str) -> bool:
    """Does the passage state what the question asks (does <name> live in|like <v> / is <name> a <v>)?"""
    q = question.removesuffix(" ?").split()
    name, value = q[1], q[-1]
    facts = passage.removesuffix(" .").split(" . ")
    return any(f.startswith(f"{name} ") and f.endswith(f" {value}") for f in facts)


def test_fact_labels_follow_the_passage():
    rng = random.Random(1)
    for i in range(200):
        r = world.fact_record(rng, i, "train")
        # the asked statement is in the passage iff the answer is yes
        assert _stated(r["passage"], r["question"]) == bool(r["label"]), r


def test_corpus_reading_pages_answer_from_their_passage():
    """Every answer in a pre-training QA page follows its passage, and pages ask several questions."""
    rng = random.Random(3)
    counts = []
    for _ in range(300):
        doc = world._qa_doc(rng)
        sentences = doc.removesuffix(" .").split(" . ")  # "<fact>" or "<question> ? <answer>"
        passage = " . ".join(x for x in sentences if " ? " not in x) + " ."
        qas = [x.split(" ? ") for x in sentences if " ? " in x]
        counts.append(len(qas))
        for question, answer in qas:
            assert _stated(passage, f"{question} ?") == (answer == "yes"), doc
    assert min(counts) == 2 and max(counts) == 4


def test_corpus_is_seeded(tmp_path):
    from repro.toyworld.build import write_corpus

    a = write_corpus(tmp_path / "a.txt", 200, seed=0)
    assert a == write_corpus(tmp_path / "b.txt", 200, seed=0)
    assert a != write_corpus(tmp_path / "c.txt", 200, seed=1)


def test_corpus_uses_adjectives_by_their_zipf_weights():
    """Polarity arrives word by word with scale because the corpus uses an adjective as often as
    its Zipf weight says (1/r^3): a heavy tail, the last of a lexicon hundreds of times rarer
    than the first."""
    from collections import Counter

    counts = Counter(w for doc in world.documents(10_000) for w in doc.split())
    for lexicon in (world.POSITIVE_WORDS, world.NEGATIVE_WORDS):
        uses = [counts[w] for w in lexicon]
        assert min(uses) > 0
        assert all(a > b for a, b in itertools.pairwise(uses[:6])), uses  # in order of weight
        assert uses[0] > 100 * uses[-1], uses
        # the 3 rarest (never in toy_review's train split) are under 2 % of the uses
        assert sum(uses[world.SEEN_ADJECTIVES :]) < 0.02 * sum(uses), uses


def test_shipped_checkpoints_were_pretrained_on_what_the_world_writes_today(tmp_path):
    """A change to the world's generator that is not followed by a rebuild would leave the shipped
    checkpoints describing another corpus: both corpora must hash to the manifest's sha256."""
    from repro.toyworld.build import write_corpus

    corpus, cfg = MANIFEST["corpus"], MANIFEST["config"]
    assert (
        write_corpus(tmp_path / "pre.txt", cfg["n_docs"], cfg["seed"]) == corpus["pretrain_sha256"]
    )
    lm = write_corpus(tmp_path / "lm.txt", cfg["n_lm_docs"], cfg["seed"] + 1)
    assert lm == corpus["lm_adapt_sha256"]


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


def test_shipped_tokenizer_keeps_every_word_of_the_world_whole():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODELS / "toy_small" / "span_corruption")
    words = sorted({w for doc in world.documents(2000) for w in doc.split()})
    assert len(words) > 100
    assert [w for w in words if len(tok.tokenize(w)) != 1] == []
    # anything else still encodes (characters, no unk) and decodes back
    text = "Hello World 42!"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids and tok.decode(ids) == text


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


# --- the zero-shot probe -----------------------------------------------------------------------


def test_probe_items_are_balanced_and_true():
    from repro.toyworld.probe import probe_items

    items = probe_items(100)
    for skill in ("review", "fact"):
        labels = [label for _, _, label in items[skill]]
        assert len(labels) == 100 and 35 <= sum(labels) <= 65, skill
    for ctx, text, label in items["review"]:
        assert len(ctx.split()) > 20  # inside other documents, as in pre-training
        adjective = text.removesuffix(" . this review is").split()[-1]
        assert adjective in (world.POSITIVE_WORDS if label else world.NEGATIVE_WORDS), text
    for _, text, label in items["fact"]:
        passage, question = text.rsplit(" . ", 1)
        assert _stated(passage + " .", question) == bool(label), text


def test_rare_review_probe_is_balanced_accuracy():
    """A model that always answers one label scores 50 on every review column, the rare
    adjectives' items included, though those items are not balanced."""
    from repro.toyworld.probe import RARE_ADJECTIVES, probe, probe_items

    items = probe_items(40)["review"]
    rare = [label for _, text, label in items if RARE_ADJECTIVES & set(text.split())]
    assert 0 < len(rare) < 40 and sum(rare) != len(rare) / 2  # unbalanced subset

    class Constant(torch.nn.Module):  # ranks "positive" first whatever it reads
        def __init__(self, tokenizer):
            super().__init__()
            self.favourite = tokenizer(" positive", add_special_tokens=False).input_ids[0]
            self.w = torch.nn.Parameter(torch.zeros(1))

        def get_encoder(self):
            return lambda input_ids, attention_mask: type(
                "Out", (), {"last_hidden_state": torch.zeros(len(input_ids), 1, 1)}
            )

        def forward(self, encoder_outputs, attention_mask, labels):
            logits = torch.zeros(*labels.shape, VOCAB)
            logits[..., self.favourite] = 5.0
            return type("Out", (), {"logits": logits})

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODELS / "toy_small" / "span_corruption")
    scores = probe(Constant(tokenizer), tokenizer, "prefix_lm", 40)
    assert scores["review"] == 50.0 and scores["review_rare"] == 50.0


def test_probe_rejects_an_unknown_style():
    from repro.toyworld.probe import probe

    with pytest.raises(ValueError, match=r"style='mlm'.*span_corruption, prefix_lm"):
        probe(None, None, "mlm")


def _shipped(rel):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    torch.set_num_threads(1)
    model = T5ForConditionalGeneration.from_pretrained(MODELS / rel, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(MODELS / rel)


@pytest.mark.parametrize("size", list(MANIFEST["models"]))
def test_shipped_in_corpus_scores_reproduce(size):
    """The manifest's in-corpus label accuracy is what the shipped weights score now."""
    from repro.toyworld.probe import in_corpus

    m = MANIFEST["models"][size]
    model, tokenizer = _shipped(m["checkpoints"]["span_corruption"])
    assert in_corpus(model, tokenizer) == m["probe"]["span_corruption"]["in_corpus"]


@pytest.mark.slow
@pytest.mark.parametrize("size", list(MANIFEST["models"]))
def test_shipped_probe_scores_reproduce(size):
    """The manifest's zero-shot probe scores are what the shipped weights score now (~10-25 s a
    size: 400 items of ~100 tokens per checkpoint, two label words each)."""
    from repro.toyworld.probe import probe

    m = MANIFEST["models"][size]
    last = f"lm_adapt_{max(MANIFEST['config']['lm_adapt_steps'])}"
    for key, style in (("span_corruption", "span_corruption"), (last, "prefix_lm")):
        model, tokenizer = _shipped(m["checkpoints"][key])
        scores = {k: v for k, v in m["probe"][key].items() if k != "in_corpus"}
        assert probe(model, tokenizer, style) == scores, (size, key)


# --- prompt tuning on a shipped checkpoint ---------------------------------------------------


def toy_config(tmp_path, *overrides):
    """experiment=toy with the shipped checkpoints addressed absolutely (pytest's cwd may vary)."""
    from repro.config import register_configs

    register_configs()  # the schema conf/config.yaml names (run alone, nothing else loaded it)
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
    cfg = load_config(cfg)
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


def test_toy_runs_are_named_and_recorded_by_the_checkpoint_they_load(tmp_path):
    """The default toy run loads step_500: it says 500, never the paper's 100000, and the panel
    (d) run at 500 is the same run (one directory), not a second copy."""
    cfg = toy_config(tmp_path, "model=toy_small")
    assert cfg.lm_adapt_steps == 500 and cfg.axes["lm_adapt_steps"] == 500
    assert "-lm500-" in cfg.name
    assert toy_config(tmp_path, "model=toy_small", "lm_adapt_steps=500").name == cfg.name
    assert cfg.axes["lm_adapt_source"] == "own"  # made by the suite, not Google's release
    span = toy_config(tmp_path, "model=toy_small", "objective=span_corruption")
    # the steps its name says (`-lm500-`), as the results frame reads them; no LM adaptation
    assert span.lm_adapt_steps == 500 and span.axes["lm_adapt_steps"] == 500
    assert span.axes["lm_adapt_source"] == "none"
    with pytest.raises(RunError, match=r"lm_adapt_steps=100000 .*toy_small's checkpoints.lm_adapt"):
        checkpoint_for(toy_config(tmp_path, "model=toy_small", "lm_adapt_steps=100000"))


# experiment=toy's own budget (100 steps, batch 16) with a 5-token prompt on the largest toy model,
# whose frozen checkpoint knows most polarities (probe 86.5 %): the README's main job scores 100.0
# with it on toy_review's 200 dev examples (majority class: 51.5).
BEATS_MAJORITY = ("model=toy_xl", "prompt_len=5", "task.max_eval_examples=100")


def test_short_prompt_tuning_beats_the_majority_class(tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(tmp_path, *BEATS_MAJORITY)
    assert run_experiment(cfg, tmp_path / "run")["status"] == "finished"
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["n_eval"] == 100 and result["checkpoint"].endswith("toy_xl/step_500")
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


def test_margin_counts_points_with_room_to_move():
    """Issue 19's test: a point has room when majority + 5 < mean < 95 (both ends open)."""

    from repro.toyworld.report import margin

    pts = pd.DataFrame(
        {
            "size": ["toy_small"] * 3 + ["toy_xl"] * 3,
            "prompt_len": [1, 20, 100] * 2,
            "mean": [52.25, 57.25, 57.3, 60.0, 94.9, 95.0],
            "std": [0.0] * 6,
        }
    )
    room = margin({"fig3a_prompt_len": pts}, floor=52.25).set_index("size")
    assert room.loc["toy_small", ["points", "inside"]].tolist() == [3, 1]  # 57.25 is not above
    assert room.loc["toy_xl", ["inside", "lowest", "highest"]].tolist() == [2, 60.0, 95.0]


def test_each_effect_row_carries_the_probe_of_the_checkpoints_it_compares():
    from repro.toyworld.report import probe_beside

    probe = {
        "span_corruption": {"review": 71.0, "review_rare": 55.5, "fact": 46.5},
        "lm_adapt_50": {"review": 60.0, "review_rare": 50.0, "fact": 53.5},
        "lm_adapt_500": {"review": 88.5, "review_rare": 64.0, "fact": 46.5},
    }
    manifest = {"models": {"toy_xl": {"probe": probe}}}
    assert (
        probe_beside(manifest, "toy_xl", ("lm_adapt",))
        == "LM 500: review 88.5 (rare 64.0), fact 46.5"
    )
    assert probe_beside(manifest, "toy_xl", ("span_corruption", "lm_adapt_*")).split("; ") == [
        "SC: review 71.0 (rare 55.5), fact 46.5",
        "LM 50: review 60.0 (rare 50.0), fact 53.5",
        "LM 500: review 88.5 (rare 64.0), fact 46.5",
    ]
    assert probe_beside(manifest, "toy_small", ("lm_adapt",)) == "-"


def test_report_reads_generated_dev_sets_from_the_runs_cache(tmp_path):
    """`python -m repro.toyworld report` end to end on 4 short runs of panel (c): the toy tasks'
    dev sets are read from the runs' own cache (generated again if it was cleared), never the
    hub; it writes the effects, the invalid-output counts and the room-to-move table."""
    import shutil

    from repro.collect.rundirs import collect_runs
    from repro.toyworld.report import report

    torch.set_num_threads(1)
    for task in ("toy_review", "toy_fact"):
        for objective in ("span_corruption", "lm_adapt"):
            cfg = toy_config(
                tmp_path, "model=toy_small", f"task={task}", f"objective={objective}",
                "trainer.steps=2", "trainer.eval_every=2", "task.max_eval_examples=20",
            )  # fmt: skip
            assert run_experiment(cfg, tmp_path / "runs" / cfg.name)["status"] == "finished"
    collect_runs([tmp_path / "runs"]).to_csv(tmp_path / "runs.csv", index=False)
    shutil.rmtree(tmp_path / "cache" / "toy-data")  # a cleared cache is generated again
    found = report(tmp_path / "runs.csv", tmp_path / "out")
    assert {e["effect"] for e in found} == {
        "LM adaptation beats span corruption (score)",
        "span corruption emits sentinels / invalid labels, LM adaptation not",
    }
    invalid = pd.read_csv(tmp_path / "out" / "invalid_outputs.csv")
    assert len(invalid) == 4 and invalid["invalid_pct"].between(0, 100).all()
    room = pd.read_csv(tmp_path / "out" / "margin.csv")
    assert room[["panel", "size", "points"]].values.tolist() == [
        ["fig3c_objective", "toy_small", 2]
    ]
    text = (tmp_path / "out" / "effects.md").read_text()
    assert "Room to move" in text and "| toy_small | span_corruption |" in text


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
        assert params["model"] == "toy_small,toy_base,toy_large,toy_xl"
        assert params["task"] == "toy_review,toy_fact" and params["seed"] == "0,1,2"
        assert params[axis] == ",".join(map(str, values))
        seen = set()
        for value in values:
            cfg = compose(stem, overrides=[search, "model=toy_large", f"{axis}={value}"])
            cfg = load_config(cfg)
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
            "--n-docs", "1500", "--n-lm-docs", "200", "--probe-items", "10"]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["models"]) == ["toy_small", "toy_base", "toy_large", "toy_xl"]
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
        # every checkpoint probed; untrained models know nothing yet, but the numbers are real
        assert set(m["probe"]) == set(m["checkpoints"])
        assert set(m["probe"]["span_corruption"]["in_corpus"]) == {"review", "fact"}
        for scores in m["probe"].values():
            assert 0 <= scores["review"] <= 100 and 0 <= scores["fact"] <= 100
        lm = json.loads((out / size / "step_3" / "manifest.json").read_text())
        assert lm["step"] == 3 and lm["source"] == f"{size}/span_corruption"


def test_probe_table_lists_every_shipped_checkpoint():
    from repro.toyworld.report import probe_lines

    lines = probe_lines(MANIFEST)
    rows = [line for line in lines if line.startswith("| toy_")]
    assert len(rows) == sum(len(m["probe"]) for m in MANIFEST["models"].values()) > 0
    assert probe_lines({"models": {}}) == []


def test_efficiency_review_pages_hold_one_polarity():
    from repro.toyworld.efficiency import review_page

    rng = random.Random(0)
    for _ in range(100):
        page = review_page(rng)
        label = page.split(" : ", 1)[0]
        assert page.endswith(f"overall a {label} review .")
        lexicon = world.POSITIVE_WORDS if label == "positive" else world.NEGATIVE_WORDS
        other = world.NEGATIVE_WORDS if label == "positive" else world.POSITIVE_WORDS
        words = set(page.split())
        assert words & set(lexicon) and not words & set(other), page


class OracleLM(torch.nn.Module):
    """A stand-in model whose logits favour the right label piece (``sign=1``), the wrong one
    (``-1``) or always ``positive`` (``0``): what each efficiency scorer must report is known."""

    def __init__(self, tokenizer, sign: int):
        from transformers import T5Config

        super().__init__()
        self.tokenizer, self.sign = tokenizer, sign
        self.config = T5Config(decoder_start_token_id=0)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # a device to read

    def forward(self, input_ids, attention_mask=None, labels=None, decoder_input_ids=None):
        from types import SimpleNamespace

        from repro.toyworld.probe import first_pieces

        negative, positive = first_pieces(self.tokenizer, world.REVIEW_LABELS)
        if labels is not None:  # teacher-forced span corruption: the truth is the target
            targets = labels
        else:  # "<review sentence> this review is" -> its polarity's first piece
            words = [set(self.tokenizer.decode(x).split()) for x in input_ids]
            truth = [positive if w & set(world.POSITIVE_WORDS) else negative for w in words]
            targets = torch.tensor(truth)[:, None]
        logits = torch.zeros(*targets.shape, len(self.tokenizer))
        if self.sign == 0:
            logits[..., positive] = 1.0
        else:
            logits.scatter_(-1, targets[..., None].clamp(min=0), float(self.sign))
        return SimpleNamespace(logits=logits)


def test_efficiency_scorers_report_what_a_known_model_knows():
    """100 for a model that always knows, 0 for one that always errs, and for one that always
    says ``positive``: 50 on the balanced held-out sentences, the share of ``positive`` among the
    masked label words of the held-out segments."""
    from transformers import AutoTokenizer

    from repro.toyworld.efficiency import _segments, masked_label_accuracy, supervised_accuracy
    from repro.toyworld.probe import first_pieces

    tokenizer = AutoTokenizer.from_pretrained(MODELS / "toy_small" / "span_corruption")
    held = _segments(tokenizer, 200, seed=0)[-40:]
    right, wrong, positive = (OracleLM(tokenizer, sign) for sign in (1, -1, 0))
    assert supervised_accuracy(right, tokenizer) == 100.0
    assert supervised_accuracy(wrong, tokenizer) == 0.0
    assert supervised_accuracy(positive, tokenizer) == 50.0
    assert masked_label_accuracy(right, tokenizer, held) == 100.0
    assert masked_label_accuracy(wrong, tokenizer, held) == 0.0
    # the constant model is right exactly where the masked label word is "positive"
    pieces = first_pieces(tokenizer, world.REVIEW_LABELS)
    targets = []
    rng = np.random.default_rng(1)  # the scorer's own draws, in its order
    for segment in held:
        _, y = span_corruption(
            segment.tolist(), rng, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id
        )
        targets += [t for t in y if t in pieces]
    share = 100.0 * sum(t == pieces[1] for t in targets) / len(targets)
    assert 0 < share < 100 and masked_label_accuracy(positive, tokenizer, held) == share


@pytest.mark.slow  # trains both arms 60 steps: ~11 s
def test_efficiency_runs_both_arms_and_rejects_bad_input(capsys):
    """60 steps of both arms on toy_small from random init: the supervised arm learns the
    polarity (63.5 → 95.5 % over steps 20-60 measured), span corruption stays near chance
    (46-52 %, docs/toy_world.md: through step 600)."""
    from repro.toyworld.__main__ import main
    from repro.toyworld.efficiency import run

    rows = run(str(MODELS / "toy_small" / "span_corruption"), steps=60, every=30, pages=1500)
    assert [r["step"] for r in rows] == [30, 60]
    assert rows[0]["supervised"] < rows[1]["supervised"] and rows[1]["supervised"] >= 90
    for r in rows:
        assert 30 <= r["span_corruption"] <= 70, r
    assert main(["efficiency", "--steps", "0"]) == 2
    assert "steps and every must be >= 1; got steps=0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pretrain-steps", "0"], "pretrain_steps must be >= 1; got 0"),
        (
            ["--lm-adapt-steps", "50,20"],
            "lm_adapt_steps must be positive and increasing; got [50, 20]",
        ),
        (["--probe-items", "0"], "probe_items must be >= 1; got 0"),
    ],
)
def test_build_rejects_bad_settings_before_any_work(tmp_path, capsys, args, message):
    from repro.toyworld.__main__ import main

    assert main(["build", "-o", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
