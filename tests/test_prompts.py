"""Initialisers give exactly the rows the paper defines; prompts round-trip through safetensors."""

from pathlib import Path

import pytest
import torch
import yaml

from repro.prompts import (
    INITIALISERS,
    SoftPrompt,
    init_prompt,
    label_token_ids,
    load_prompt,
    prepend_prompt,
    save_prompt,
)


@pytest.fixture
def table():
    torch.manual_seed(0)
    return torch.randn(6000, 16)


# Figure 3(b)'s legend, transcribed from the paper, and the registry name of each line
PAPER_LEGEND = {
    "Random Uniform": "random_uniform",
    "Sampled Vocab": "sampled_vocab",
    "Class Label": "class_label",
}
# what each initialiser is given (the job passes these from the task, init.text, init.path)
INIT_INPUTS = {
    "random_uniform": {},
    "sampled_vocab": {},
    "class_label": {"class_token_ids": [[7, 11], [42]]},
    "text": {"text_ids": [9, 8, 7, 1]},
    "from_file": {"prompt": torch.arange(6 * 16, dtype=torch.float32).view(6, 16)},
}


def test_each_registry_name_gives_the_rows_its_legend_label_means(table):
    """A name dispatched through ``init_prompt`` must give that initialiser's rows: swapping two
    entries, or pointing a name at another function, fails here."""
    rows = {name: init_prompt(name, table, 6, seed=0, **INIT_INPUTS[name]) for name in INITIALISERS}
    assert set(rows) == set(INIT_INPUTS)  # every initialiser is checked below
    uniform = rows["random_uniform"]  # U[-0.5, 0.5): no row of the table
    assert uniform.min() >= -0.5 and uniform.max() < 0.5
    assert not any((table == row).all(dim=1).any() for row in uniform)
    ids = rows_to_ids(rows["sampled_vocab"], table)  # distinct table rows among the first 5,000
    assert len(set(ids)) == 6 and max(ids) < 5000
    labelled = rows["class_label"]  # label means first, then sampled vocab
    assert torch.allclose(labelled[0], table[[7, 11]].mean(0))
    assert torch.equal(labelled[1], table[42])
    assert max(rows_to_ids(labelled[2:], table)) < 5000
    assert torch.equal(rows["text"], table[[9, 8, 7, 1, 9, 8]])  # PEFT: repeated, then cut
    assert torch.equal(rows["from_file"], INIT_INPUTS["from_file"]["prompt"])


def test_registry_names_are_the_paper_legend_and_every_config_choice():
    from repro.config import INITS
    from repro.plots.ablations import axis_label

    root = Path(__file__).resolve().parents[1]
    for label, name in PAPER_LEGEND.items():  # the figures label each line as the paper does
        assert name in INITIALISERS and axis_label("init", name) == label
    assert set(INITS) == set(INITIALISERS)  # init=<name> reaches an initialiser, and only one
    for file in (root / "conf" / "init").glob("*.yaml"):
        assert yaml.safe_load(file.read_text())["name"] == file.stem in INITIALISERS
    sweep = yaml.safe_load((root / "sweeps" / "fig3b_init.yaml").read_text())
    assert sweep["hydra"]["sweeper"]["params"]["init"].split(",") == list(PAPER_LEGEND.values())


def test_random_uniform_range_paper_and_official(table):
    paper = init_prompt("random_uniform", table, 150, seed=0)
    assert paper.shape == (150, 16) and paper.dtype == torch.float32
    assert paper.min() >= -0.5 and paper.max() < 0.5
    assert paper.min() < -0.4 and paper.max() > 0.4  # the whole range is used
    official = init_prompt("random_uniform", table, 150, seed=0, low=0.0, high=0.5)
    assert official.min() >= 0.0 and official.max() < 0.5


def test_official_text_rule_fills_past_the_text_from_the_official_fallback(tiny_t5_dir, tokenizer):
    """init=text init.text_rule=official: rows past the text from the official fallback, flax
    ``uniform()`` = U[0, 0.01) (conf/init/text.yaml), through the job's own initial_prompt;
    init.low/high give the paper's U[-0.5, 0.5) when asked."""
    from repro.backbone import load_backbone
    from repro.job.task import initial_prompt

    backbone = load_backbone(tiny_t5_dir)
    table = backbone.get_input_embeddings().weight.detach()
    text = ["init=text", "init.text=is it good", "init.text_rule=official", "prompt_len=40"]
    ids = tokenizer("is it good", add_special_tokens=False).input_ids  # no eos
    for extra, (low, high) in (
        ([], (0.0, 0.01)),
        (["init.low=-0.5", "init.high=0.5"], (-0.5, 0.5)),
    ):
        cfg = compose_config(*text, *extra)
        assert (cfg.init.low, cfg.init.high) == (low, high)
        prompt = initial_prompt(cfg, None, backbone, tokenizer)
        assert torch.equal(prompt[: len(ids)], table[ids])
        rest = prompt[len(ids) :]
        assert rest.min() >= low and rest.max() < high
        assert rest.max() - rest.min() > 0.9 * (high - low)  # the whole range, not a corner of it
    peft = initial_prompt(compose_config(*text[:2], "prompt_len=40"), None, backbone, tokenizer)
    assert torch.equal(peft, table[(tokenizer("is it good").input_ids * 40)[:40]])  # no fill


def compose_config(*overrides: str):
    from hydra import compose, initialize_config_dir

    import repro.run  # noqa: F401  (registers the schema and the run_name resolver)
    from repro.resolve import load_config

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides)))


def test_initialisers_are_seeded(table):
    for name in ["random_uniform", "sampled_vocab"]:
        assert torch.equal(
            init_prompt(name, table, 20, seed=3), init_prompt(name, table, 20, seed=3)
        )
        assert not torch.equal(
            init_prompt(name, table, 20, seed=3), init_prompt(name, table, 20, seed=4)
        )


def rows_to_ids(prompt, table):
    """Which table row each prompt row is (asserts every prompt row is an exact table row)."""
    ids = []
    for row in prompt:
        match = (table == row).all(dim=1).nonzero().flatten()
        assert len(match) == 1, "prompt row is not a row of the embedding table"
        ids.append(int(match[0]))
    return ids


def test_sampled_vocab_rows_are_distinct_ids_below_5000(table):
    prompt = init_prompt("sampled_vocab", table, 150, seed=0)
    ids = rows_to_ids(prompt, table)
    assert len(set(ids)) == 150
    assert max(ids) < 5000


def test_sampled_vocab_population_is_configurable_and_replaces_only_when_needed(table):
    ids = rows_to_ids(init_prompt("sampled_vocab", table, 10, seed=0, population=10), table)
    assert sorted(ids) == list(range(10))  # all 10 of the population, each once
    ids = rows_to_ids(init_prompt("sampled_vocab", table, 30, seed=0, population=10), table)
    assert max(ids) < 10 and len(ids) == 30  # p > population: with replacement


def test_class_label_rows_are_mean_subtoken_embeddings(table):
    labels = [[7, 11], [42], [5, 6, 8]]
    prompt = init_prompt("class_label", table, 5, seed=0, class_token_ids=labels)
    assert torch.allclose(prompt[0], (table[7] + table[11]) / 2)
    assert torch.equal(prompt[1], table[42])
    assert torch.allclose(prompt[2], (table[5] + table[6] + table[8]) / 3)
    rest = rows_to_ids(prompt[3:], table)
    assert len(set(rest)) == 2 and max(rest) < 5000


def test_class_label_truncates_when_prompt_shorter_than_classes(table):
    prompt = init_prompt("class_label", table, 1, seed=0, class_token_ids=[[3], [4], [9]])
    assert prompt.shape == (1, 16)
    assert torch.equal(prompt[0], table[3])


def test_class_label_uses_the_tokenizer_ids_without_special_tokens(tokenizer):
    ids = label_token_ids(tokenizer, ["not_entailment", "entailment"])
    assert tokenizer.eos_token_id not in ids[0] + ids[1]
    assert tokenizer.decode(ids[0]) == "not_entailment"
    table = torch.randn(len(tokenizer), 8)
    prompt = init_prompt("class_label", table, 4, seed=0, class_token_ids=ids)
    assert torch.allclose(prompt[0], table[ids[0]].mean(0))


def test_bad_init_inputs_fail_clearly(table):
    with pytest.raises(ValueError, match="unknown prompt init 'zeros'.*random_uniform"):
        init_prompt("zeros", table, 5, seed=0)
    for bad in [0, -3, 2.5, True]:
        with pytest.raises(ValueError, match="prompt length must be an integer >= 1"):
            init_prompt("random_uniform", table, bad, seed=0)
    with pytest.raises(ValueError, match="needs the task's label strings"):
        init_prompt("class_label", table, 5, seed=0, class_token_ids=[])


def test_prepend_prompt_shapes_and_mask():
    prompt = torch.randn(3, 4)
    embeds = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out, out_mask = prepend_prompt(prompt, embeds, mask)
    assert out.shape == (2, 8, 4)
    assert torch.equal(out[:, :3], prompt.expand(2, -1, -1))
    assert torch.equal(out[:, 3:], embeds)
    assert out_mask.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8]
    with pytest.raises(ValueError, match="prompt width 3 does not match the model's d_model 4"):
        prepend_prompt(torch.randn(2, 3), embeds, mask)


def test_prompt_round_trip_and_width_check(tmp_path):
    prompt = SoftPrompt(torch.randn(20, 16))
    save_prompt(prompt.weight, tmp_path / "best", backbone="tiny", init="class_label", step=7)
    loaded, meta = load_prompt(tmp_path / "best", d_model=16)
    assert torch.equal(loaded, prompt.weight.detach())
    assert meta == {
        "prompt_len": 20,
        "d_model": 16,
        "backbone": "tiny",
        "init": "class_label",
        "step": 7,
    }
    with pytest.raises(ValueError, match="width 16 .* d_model is 32"):
        load_prompt(tmp_path / "best", d_model=32)
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "prompt.json",
        "prompt.safetensors",
    ]
