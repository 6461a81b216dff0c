"""LM adaptation: the prefix-LM example builder, the optimizer schedule, config errors, and a tiny
T5 adapted end to end — checkpoints that load, drive prompt tuning, and resume bit-exactly."""

import json
import random
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from safetensors.torch import load_file

import repro.run  # noqa: F401  (registers the prompt-tuning schema and resolvers)
from repro.lm_adapt.checkpoints import STATE_FILE
from repro.lm_adapt.config import LMAdaptConfig, to_lm_adapt_config
from repro.lm_adapt.data import (
    ExampleStream,
    PrefixLMExample,
    collate_fixed,
    example_rng,
    open_corpus,
    prefix_lm_examples,
    read_documents,
)
from repro.lm_adapt.train import build_optimizer, lm_adapt, rsqrt_lr
from repro.resolve import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"
EOS = 1
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "the",
    "dog",
    "ran",
    "to",
    "the",
    "house",
    "by",
    "the",
    "river",
]


def compose_lm_adapt(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_lm_adapt_config(compose(config_name="lm_adapt", overrides=list(overrides)))


def write_corpus(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Short sentences over a small vocabulary: a tiny T5 learns them within a few steps."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def strip_eos(ids: list[int]) -> list[int]:
    assert ids[-1] == EOS
    return ids[:-1]


# --- the prefix-LM example builder -------------------------------------------------------------


def test_every_token_lands_in_exactly_one_of_input_or_target():
    # input_length 8 → segments of 7 tokens: a 20-token text gives segments 7, 7, 6
    ids = list(range(100, 120))
    examples = prefix_lm_examples(
        ids, random.Random(0), input_length=8, target_length=8, eos_id=EOS
    )
    assert len(examples) == 3
    rebuilt = []
    for ex, segment in zip(examples, (ids[0:7], ids[7:14], ids[14:20]), strict=True):
        prefix, continuation = strip_eos(ex.inputs), strip_eos(ex.targets)
        assert prefix + continuation == segment  # a split, nothing dropped or repeated
        assert 1 <= len(prefix) <= len(segment) - 1  # both sides non-empty
        assert len(ex.inputs) <= 8 and len(ex.targets) <= 8
        rebuilt += prefix + continuation
    assert rebuilt == ids


def test_split_points_vary_across_texts_and_seeds():
    ids = list(range(100, 131))  # one 31-token segment with input_length 32

    def split(seed):
        (ex,) = prefix_lm_examples(
            ids, random.Random(seed), input_length=32, target_length=32, eos_id=EOS
        )
        return len(ex.inputs) - 1

    splits = {split(seed) for seed in range(40)}
    assert len(splits) > 10 and min(splits) >= 1 and max(splits) <= 30
    # the stream seeds each document by (seed, index): other documents, other split points
    per_doc = {split_doc for split_doc in (example_rng(0, i).randint(1, 30) for i in range(40))}
    assert len(per_doc) > 10
    assert example_rng(0, 5).random() == example_rng(0, 5).random()
    assert example_rng(0, 5).random() != example_rng(1, 5).random()


def test_short_texts_and_target_truncation():
    one = prefix_lm_examples([7], random.Random(0), input_length=8, target_length=8, eos_id=EOS)
    assert one == [PrefixLMExample([EOS], [7, EOS])]  # T5: a 1-token segment goes to the target
    assert (
        prefix_lm_examples([], random.Random(0), input_length=8, target_length=8, eos_id=EOS) == []
    )
    # target_length 3 keeps only the first 2 continuation tokens (+ eos)
    (ex,) = prefix_lm_examples(
        list(range(100, 107)), random.Random(3), input_length=8, target_length=3, eos_id=EOS
    )
    prefix = strip_eos(ex.inputs)
    assert ex.targets == [*list(range(100, 107))[len(prefix) :][:2], EOS]


def test_collate_pads_to_the_fixed_lengths():
    batch = collate_fixed(
        [PrefixLMExample([5, 6, EOS], [7, EOS]), PrefixLMExample([5, EOS], [8, 9, 10, EOS])],
        input_length=6,
        target_length=5,
        pad_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 1, 0, 0, 0], [5, 1, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100, -100], [8, 9, 10, 1, -100]]


def test_stream_reconstructs_the_documents_and_resumes_at_its_position(tmp_path, tokenizer):
    corpus_path = write_corpus(tmp_path / "c.txt", n=10)
    cfg = LMAdaptConfig(steps=[1], corpus=str(corpus_path), input_length=12, target_length=12)
    corpus = open_corpus(cfg)
    stream = ExampleStream(corpus, tokenizer, cfg)
    # 10 documents read in order, then the corpus wraps around with new split points
    texts = corpus_path.read_text().splitlines()
    wanted = [t for text in texts for t in tokenizer(text, add_special_tokens=False).input_ids]
    got = []
    while stream.position[0] < 10:
        (ex,) = stream.take(1)
        got += strip_eos(ex.inputs) + strip_eos(ex.targets)
    assert got[: len(wanted)] == wanted
    # resuming from a saved position yields exactly what the uninterrupted stream yields next
    first = ExampleStream(corpus, tokenizer, cfg)
    first.take(7)
    resumed = ExampleStream(corpus, tokenizer, cfg, position=first.position)
    assert resumed.take(9) == first.take(9)
    # data parallel: rank r of 2 reads the documents with index % 2 == r
    odds = read_documents(corpus, 0, rank=1, world=2)
    assert [next(odds)[0] for _ in range(4)] == [1, 3, 5, 7]
    evens = read_documents(corpus, 0, rank=0, world=2)
    assert [next(evens)[0] for _ in range(7)] == [0, 2, 4, 6, 8, 10, 12]


def test_local_jsonl_corpus_and_bad_records(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text('{"text": "a b"}\n{"text": "c", "url": "x"}\n')
    corpus = open_corpus(LMAdaptConfig(steps=[1], corpus=str(good)))
    assert corpus.size == 2 and list(corpus.open_pass(0)) == ["a b", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON object with a 'text' field"):
        list(open_corpus(LMAdaptConfig(steps=[1], corpus=str(bad))).open_pass(0))


# --- optimizer ---------------------------------------------------------------------------------


def test_rsqrt_schedule_values():
    assert rsqrt_lr(1) == 0.01 and rsqrt_lr(10_000) == 0.01
    assert rsqrt_lr(40_000) == 0.005
    assert rsqrt_lr(1, step_offset=1_000_000) == 1 / (1_000_001**0.5)


def test_optimizer_equals_hf_adafactor_relative_step():
    """Our explicit schedule + Adafactor = HF's relative_step=True defaults, bit for bit."""
    from transformers.optimization import Adafactor

    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4))
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4))
    theirs.load_state_dict(ours.state_dict())
    opt_ours = build_optimizer(ours.parameters(), LMAdaptConfig(steps=[1]))
    opt_theirs = Adafactor(
        theirs.parameters(), scale_parameter=True, relative_step=True, warmup_init=False, lr=None
    )
    x = torch.randn(5, 6)
    for step in range(1, 4):
        for group in opt_ours.param_groups:
            group["lr"] = rsqrt_lr(step)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0].weight, torch.nn.Linear(6, 4).weight)


# --- config ------------------------------------------------------------------------------------


def test_defaults_compose(tmp_path):
    run = compose_lm_adapt("model=base", f"paths.cache_dir={tmp_path}")
    cfg = run.lm_adapt
    assert cfg.steps == [10_000, 50_000, 100_000] and cfg.corpus is None
    assert (cfg.dataset, cfg.dataset_config) == ("allenai/c4", "en")
    assert (cfg.input_length, cfg.target_length, cfg.batch_size) == (512, 512, 128)
    assert (cfg.warmup_steps, cfg.step_offset, cfg.dropout) == (10_000, 0, 0.0)
    assert cfg.precision == "auto"  # bf16 autocast on a GPU with bf16, fp32 on a CPU
    assert run.model.checkpoints["span_corruption"] == "google/t5-v1_1-base"
    assert run.paths.lm_adapt_dir == f"{tmp_path}/lm_adapt"


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("lm_adapt.steps=[50000,10000]", ValueError, "strictly increasing"),
        ("lm_adapt.steps=[0,10]", ValueError, "positive"),
        ("lm_adapt.steps=[]", ValueError, "non-empty"),
        ("lm_adapt.corpus=/nonexistent/c4.jsonl", FileNotFoundError, "does not exist"),
        ("lm_adapt.corpus=/nonexistent/c4.csv", ValueError, r"must end in \.txt or \.jsonl"),
        ("lm_adapt.grad_accum=3", ValueError, "not a multiple"),
        ("lm_adapt.input_length=1", ValueError, "input_length must be an integer >= 2"),
        ("lm_adapt.precision=fp16", ValueError, r"lm_adapt.precision='fp16' is not allowed"),
    ],
)
def test_bad_values_fail_with_one_clear_error(override, error, match):
    with pytest.raises(error, match=match):
        compose_lm_adapt("model=base", override)


def test_non_integer_steps_fail_at_composition():
    with pytest.raises(ConfigCompositionException, match=r"lm_adapt.steps=\[10,ten\]"):
        compose_lm_adapt("model=base", "lm_adapt.steps=[10,ten]")


# --- a tiny T5 adapted end to end --------------------------------------------------------------

TINY = (
    "lm_adapt.input_length=24",
    "lm_adapt.target_length=24",
    "lm_adapt.batch_size=4",
    "lm_adapt.grad_accum=2",
    "lm_adapt.log_every=2",
    "lm_adapt.progress=false",
)


@contextmanager
def one_thread():
    """Tiny matrices: one intra-op thread avoids oversubscribing a shared 2-core CPU (5x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def adapt(tiny_t5_dir, corpus, lm_dir, *overrides):
    run = compose_lm_adapt(
        "model=tiny",
        f"model.path={tiny_t5_dir}",
        f"paths.lm_adapt_dir={lm_dir}",
        f"lm_adapt.corpus={corpus}",
        *TINY,
        *overrides,
    )
    with one_thread():
        return lm_adapt(run)


@pytest.fixture(scope="module")
def adapted(tiny_t5_dir, tmp_path_factory):
    """One uninterrupted run to step 16 with checkpoints at 8 and 16."""
    root = tmp_path_factory.mktemp("lm_adapt")
    corpus = write_corpus(root / "corpus.txt")
    lm_dir = root / "lm_adapt"
    manifest = adapt(tiny_t5_dir, corpus, lm_dir, "lm_adapt.steps=[8,16]")
    return {"root": root, "corpus": corpus, "lm_dir": lm_dir, "manifest": manifest}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_decreases_and_checkpoints_load(adapted, tiny_t5_dir):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    out = adapted["lm_dir"] / "tiny"
    losses = [r["loss"] for r in records(out / "metrics.jsonl")]
    assert [r["step"] for r in records(out / "metrics.jsonl")] == list(range(2, 17, 2))
    assert losses[-1] < 0.8 * losses[0]
    source = load_file(Path(tiny_t5_dir) / "model.safetensors")
    for step in (8, 16):
        ckpt = out / f"step_{step}"
        model = T5ForConditionalGeneration.from_pretrained(ckpt)
        tok = AutoTokenizer.from_pretrained(ckpt)
        assert tok("the cat").input_ids[-1] == tok.eos_token_id == 1
        weights = load_file(ckpt / "model.safetensors")
        assert set(weights) == set(source)
        changed = [k for k in weights if not torch.equal(weights[k], source[k])]
        assert len(changed) == len(weights)  # all weights train, not only some
        assert model.config.d_model == 32
        manifest = json.loads((ckpt / "manifest.json").read_text())
        assert manifest["step"] == step and manifest["source"] == str(tiny_t5_dir)
        assert manifest["corpus"] == str(adapted["corpus"]) and manifest["seed"] == 0
        assert (manifest["input_length"], manifest["target_length"]) == (24, 24)
        assert set(manifest["versions"]) == {"python", "torch", "transformers"}
    assert not list(out.glob(".*"))  # no staging leftovers


def test_checkpoint_drives_prompt_tuning(adapted, tmp_path):
    from repro.job.experiment import run_experiment

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        dcfg = compose(
            config_name="config",
            overrides=[
                "experiment=smoke",
                "objective=lm_adapt",
                "lm_adapt_steps=8",
                "model.path=null",
                f"paths.cache_dir={tmp_path}",
                f"paths.lm_adapt_dir={adapted['lm_dir']}",
                f"paths.root={tmp_path}",
                "trainer.steps=4",
                "trainer.eval_every=4",
                "task.max_eval_examples=8",
            ],
        )
    cfg = load_config(dcfg)
    with one_thread():
        summary = run_experiment(cfg, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert summary["status"] == result["status"] == "finished"
    assert result["checkpoint"] == str(adapted["lm_dir"] / "tiny" / "step_8")
    assert result["lm_adapt_steps"] == 8 and result["steps"] == 4


def test_interrupted_run_resumes_to_identical_weights(adapted, tiny_t5_dir):
    lm_dir = adapted["root"] / "resumed"
    # first launch stops at step 8; the relaunch asks for more and continues from last/
    first = adapt(tiny_t5_dir, adapted["corpus"], lm_dir, "lm_adapt.steps=[8]")
    assert first["step"] == 8
    last = json.loads((lm_dir / "tiny" / "last" / "manifest.json").read_text())
    assert last["step"] == 8 and last["data_positions"] == adapted_positions(adapted, 8)
    assert last["precision"] == "fp32"  # lm_adapt.precision=auto on a CPU
    # a last/ written before lm_adapt.precision holds bf16_autocast: false, read as fp32
    state_file = lm_dir / "tiny" / "last" / STATE_FILE
    state = torch.load(state_file, weights_only=True)
    del state["fingerprint"]["precision"]
    torch.save(
        {**state, "fingerprint": {**state["fingerprint"], "bf16_autocast": False}}, state_file
    )
    second = adapt(tiny_t5_dir, adapted["corpus"], lm_dir, "lm_adapt.steps=[8,16]")
    assert second["step"] == 16
    a = load_file(adapted["lm_dir"] / "tiny" / "step_16" / "model.safetensors")
    b = load_file(lm_dir / "tiny" / "step_16" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the metrics of the two launches read as one run's
    assert records(lm_dir / "tiny" / "metrics.jsonl") == [
        {**r, "steps_per_s": s["steps_per_s"]}
        for r, s in zip(
            records(adapted["lm_dir"] / "tiny" / "metrics.jsonl"),
            records(lm_dir / "tiny" / "metrics.jsonl"),
            strict=True,
        )
    ]
    # a finished run relaunched does nothing; other settings in the same directory are refused
    assert adapt(tiny_t5_dir, adapted["corpus"], lm_dir, "lm_adapt.steps=[8,16]")["step"] == 16
    with pytest.raises(ValueError, match=r"different settings \(differs in: seed\)"):
        adapt(tiny_t5_dir, adapted["corpus"], lm_dir, "lm_adapt.steps=[8,24]", "lm_adapt.seed=1")


def adapted_positions(adapted, step: int) -> list[list[int]]:
    manifest = json.loads(
        (adapted["lm_dir"] / "tiny" / f"step_{step}" / "manifest.json").read_text()
    )
    return manifest["data_positions"]


def test_streamed_corpus_reads_from_the_skip_point(monkeypatch):
    """The C4 path (no network here): load_dataset(..., streaming=True) → texts, .skip() on resume."""
    import datasets

    def fake_load_dataset(path, name, split, streaming):
        assert (path, name, split, streaming) == ("allenai/c4", "en", "train", True)
        texts = [{"text": f"doc {i}", "url": "u"} for i in range(5)]
        return datasets.IterableDataset.from_generator(lambda: iter(texts))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = open_corpus(LMAdaptConfig(steps=[1]))
    assert corpus.name == "allenai/c4:en:train" and corpus.size is None
    resumed = read_documents(corpus, 3, rank=0, world=1)
    assert [next(resumed) for _ in range(2)] == [(3, "doc 3"), (4, "doc 4")]
    with pytest.raises(ValueError, match="ran out after 5 documents"):
        list(read_documents(corpus, 0, rank=0, world=1))
