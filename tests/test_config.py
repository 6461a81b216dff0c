"""Every config file composes into a valid Config; bad values fail at composition, clearly."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

import repro.run  # noqa: F401  (registers the schema and the run_name resolver)
from repro.config import Config
from repro.resolve import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=list(overrides)))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_are_the_papers():
    cfg = compose_config()
    assert (cfg.model.size, cfg.objective.name, cfg.lm_adapt_steps) == ("base", "lm_adapt", 100000)
    assert (cfg.init.name, cfg.prompt_len, cfg.task.name) == ("class_label", 100, "superglue")
    t = cfg.trainer
    assert (t.steps, t.batch_size, t.eval_every) == (30000, 32, 1000)
    opt = t.optimizer
    assert (opt.lr, opt.decay_rate, opt.clip_threshold) == (0.3, 0.8, 1.0)
    assert (opt.weight_decay, opt.weight_decay_lr_scaled) == (1e-5, False)
    assert cfg.init.low == -0.5 and cfg.init.high == 0.5
    assert cfg.task.eval_mode == "generate"
    assert cfg.name == "superglue-base-lm_adapt100k-p100-class_label-s0"


@pytest.mark.parametrize(
    ("steps", "label"), [(100000, "lm_adapt100k"), (10000, "lm_adapt10k"), (50, "lm_adapt50")]
)
def test_run_name_keeps_lm_adapt_steps_exact(steps, label):
    """Toy LM-adaptation counts (20, 50) must not all collapse to "0k" and share a run dir."""
    cfg = compose_config(f"lm_adapt_steps={steps}")
    assert cfg.name == f"superglue-base-{label}-p100-class_label-s0"


@pytest.mark.parametrize(
    "group",
    ["model", "objective", "init", "task", "trainer", "logger", "paths", "experiment"],
)
def test_every_file_of_every_group_composes(group, tmp_path):
    import torch

    from repro.prompts import save_prompt

    save_prompt(torch.zeros(100, 768), tmp_path)  # what init=from_file needs: a given prompt
    needs = {"from_file": [f"init.path={tmp_path}"], "text": ["init.text=Is it true?"]}
    options = group_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose_config(f"{group}={option}", *needs.get(option, []) * (group == "init"))
        assert isinstance(cfg, Config)


def test_model_and_objective_pick_the_hub_checkpoint():
    from repro.checkpoints import checkpoint_for

    assert checkpoint_for(compose_config("model=base")) == "google/t5-base-lm-adapt"
    assert checkpoint_for(compose_config("model=xl", "objective=span_corruption")) == (
        "google/t5-v1_1-xl"
    )
    sentinel = compose_config("model=small", "objective=span_corruption_sentinel")
    assert checkpoint_for(sentinel) == "google/t5-v1_1-small"
    assert sentinel.objective.sentinel_placement == "targets"
    assert checkpoint_for(compose_config("model=large", "lm_adapt_steps=0")) == (
        "google/t5-v1_1-large"
    )
    assert checkpoint_for(compose_config("model=base", "model.path=/my/ckpt")) == "/my/ckpt"


def test_official_values_are_one_override_away():
    official = compose_config("trainer=official")
    assert (official.trainer.batch_size, official.trainer.z_loss) == (128, 1e-4)
    assert official.trainer.optimizer.lr == 0.3
    assert official.trainer.optimizer.initial_step == 1_100_000
    assert compose_config().trainer.optimizer.initial_step == 0
    assert compose_config("init=random_uniform", "init.low=0.0").init.low == 0.0


def test_smoke_experiment_uses_only_local_assets():
    cfg = compose_config("experiment=smoke")
    assert cfg.model.size == "tiny" and cfg.model.build_tiny and cfg.model.path
    # generated data: read from the cache (repro.tasks.base.data_dir_for), never the hub
    from repro.tasks import get_task
    from repro.tasks.base import data_dir_for

    assert cfg.task.name == "toy_keyword" and cfg.task.data_dir is None
    cached = data_dir_for(get_task("toy_keyword"), None, cfg.paths.cache_dir)
    assert cached == Path(cfg.paths.cache_dir).expanduser() / "toy-data" / "toy_keyword"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prompt_len=0", "prompt_len must be an integer >= 1; got 0"),
        ("prompt_len=-5", "prompt_len must be an integer >= 1; got -5"),
        (
            "trainer.batch_size=30",
            "trainer.batch_size=30 is not a multiple of trainer.grad_accum=4",
        ),
        ("trainer.steps=-1", "trainer.steps must be an integer >= 0; got -1"),
        (
            "task.eval_mode=beam",
            "task.eval_mode='beam' is not allowed; choose one of: generate, rank",
        ),
        ("model.dtype=fp8", "model.dtype='fp8' is not allowed"),
        ("seed=-1", "seed must be a non-negative integer; got -1"),
        ("init.low=1.0", "init.low must be < init.high; got 1.0 and 0.5"),
    ],
)
def test_bad_values_fail_with_one_clear_line(override, message):
    extra = ["trainer.grad_accum=4"] if "batch_size" in override else []
    with pytest.raises(ValueError) as info:
        compose_config(override, *extra)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_lm_adapt_steps_need_the_lm_adapt_objective():
    with pytest.raises(
        ValueError, match="lm_adapt_steps=50000 only applies with objective=lm_adapt"
    ):
        compose_config("objective=span_corruption", "lm_adapt_steps=50000")


def test_lm_adapt_source_is_validated_and_needs_the_lm_adapt_objective():
    assert compose_config().lm_adapt_source == "auto"
    with pytest.raises(ValueError) as info:
        compose_config("lm_adapt_source=google")
    assert str(info.value) == "lm_adapt_source='google' is not allowed; choose one of: auto, own"
    with pytest.raises(
        ValueError,
        match=r"^lm_adapt_source=own only applies with objective=lm_adapt "
        r"\(got objective=span_corruption_sentinel\)$",
    ):
        compose_config("objective=span_corruption_sentinel", "lm_adapt_source=own")


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        ((), "released"),  # google/t5-base-lm-adapt
        (("lm_adapt_source=own",), "own"),  # repro.lm_adapt's step_100000/
        (("lm_adapt_steps=10000",), "own"),  # never released: repro.lm_adapt's either way
        (("lm_adapt_steps=50000", "lm_adapt_source=own"), "own"),
        (("lm_adapt_steps=0",), "none"),  # T5.1.1 itself
        (("lm_adapt_steps=0", "lm_adapt_source=own"), "none"),
        (("objective=span_corruption",), "none"),
        (("model=toy_small",), "own"),  # its checkpoints.lm_adapt is the suite's own step_500
        (("experiment=smoke",), "own"),  # the suite's tiny model (model.path)
        (("model.path=/ckpt/google/t5-base-lm-adapt",), "released"),  # a mirror of the release
        (("model.path=/data/lm_adapt/base/step_100000",), "own"),
    ],
)
def test_each_run_records_the_recipe_of_its_backbone(overrides, source):
    assert compose_config(*overrides).axes["lm_adapt_source"] == source


def test_the_lm_adapt_source_rule():
    from repro.config import is_released_lm_adapt, resolve_lm_adapt_source

    assert is_released_lm_adapt("google/t5-xxl-lm-adapt")
    assert is_released_lm_adapt("/hf/hub/models--google--t5-small-lm-adapt/snapshots/abc123")
    for other in ("google/t5-v1_1-base", "google/t5-base-lm-adapt-v2", "me/t5-base-lm-adapt", ""):
        assert not is_released_lm_adapt(other), other
    rule = resolve_lm_adapt_source
    released = "google/t5-large-lm-adapt"
    assert rule("lm_adapt", 100_000, "auto", None, released) == "released"
    assert rule("lm_adapt", 100_000, "own", None, released) == "own"
    # a model whose LM-adapted checkpoint is not a Google release: the suite made it, so own
    assert rule("lm_adapt", 100_000, "auto", None, "/repro/toy_models/toy_small/step_500") == "own"
    assert rule("lm_adapt", 100_000, "auto", None, None) == "own"
    # a model.path is what is loaded, whatever the choice
    assert rule("lm_adapt", 100_000, "own", released, None) == "released"
    assert rule("lm_adapt", 10_000, "auto", None, released) == "own"
    assert rule("lm_adapt", 0, "own", None, released) == "none"
    assert rule("span_corruption", 100_000, "auto", None, released) == "none"


def test_own_adaptation_gets_its_own_run_dir_only_where_it_loads_another_backbone():
    from repro.rundir import fingerprint

    auto, own = compose_config(), compose_config("lm_adapt_source=own")
    assert auto.name == "superglue-base-lm_adapt100k-p100-class_label-s0"  # unchanged
    assert own.name == "superglue-base-lm_adapt100k_own-p100-class_label-s0"
    assert fingerprint(own)["lm_adapt_source"] == "own"
    # auto's fingerprint has no such key: run dirs made before it existed still match
    assert "lm_adapt_source" not in fingerprint(auto)
    for steps in (0, 10000, 50000):  # T5.1.1, or repro.lm_adapt's step_<N>/ either way
        a = compose_config(f"lm_adapt_steps={steps}")
        o = compose_config(f"lm_adapt_steps={steps}", "lm_adapt_source=own")
        assert a.name == o.name and fingerprint(a) == fingerprint(o)


def test_own_adaptation_loads_the_suites_100k_checkpoint(tmp_path):
    from repro.checkpoints import checkpoint_for
    from repro.cli import RunError

    cfg = compose_config("model=small", "lm_adapt_source=own", f"paths.lm_adapt_dir={tmp_path}")
    with pytest.raises(RunError) as info:
        checkpoint_for(cfg)
    assert str(tmp_path / "small/step_100000") in str(info.value)
    command = "`python -m repro.lm_adapt model=small lm_adapt.steps=[10000,50000,100000]`"
    assert command in str(info.value)
    (tmp_path / "small/step_100000").mkdir(parents=True)
    (tmp_path / "small/step_100000/config.json").write_text("{}")
    assert checkpoint_for(cfg) == str(tmp_path / "small/step_100000")
    auto = compose_config("model=small", f"paths.lm_adapt_dir={tmp_path}")
    assert checkpoint_for(auto) == "google/t5-small-lm-adapt"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("init=zeros", "Could not find 'init/zeros'"),
        ("model=huge", "Could not find 'model/huge'"),
        ("task=squad2", "Could not find 'task/squad2'"),
        ("objective=mlm", "Could not find 'objective/mlm'"),
    ],
)
def test_unknown_group_options_fail_at_composition(override, message):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(override)
    assert message in str(info.value)


def test_typos_and_wrong_types_fail_at_composition():
    with pytest.raises(ConfigCompositionException, match="prompt_lenn"):
        compose_config("prompt_lenn=5")
    with pytest.raises((ValidationError, ConfigKeyError, ConfigCompositionException)):
        compose_config("prompt_len=2.5")
    with pytest.raises((ValidationError, ConfigCompositionException)):
        compose_config("trainer.steps=many")


def test_help_lists_only_real_options():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "repro.run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    groups = out.split("== Config groups (group=option) ==")[1].split("Show a run's whole config")[
        0
    ]
    assert f"model: {', '.join(group_options('model'))}\n" in groups  # T5 sizes and causal ones
    assert "schema" not in groups
