"""repro.compose: a sweep's jobs composed with the config groups once per combination are the
configs Hydra composes job by job (repro.cost prices them, the panel sweeper places them)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

import repro.run  # noqa: F401  (registers the schema and the run_name resolver)
from repro.compose import GroupComposer
from repro.config import CONF_DIR
from repro.cost.plan import sweep_plan
from repro.resolve import load_config

ROOT = Path(__file__).resolve().parents[1]


def _hydra(config_dir: Path, config_name: str, overrides: list[str]):
    search = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir != CONF_DIR else []
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name, overrides=[*search, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return load_config(cfg)


@pytest.mark.slow  # 8-27 s in the default run (CI runs it)
@pytest.mark.parametrize(
    ("config_dir", "config_name", "overrides"),
    [
        (ROOT / "sweeps", "fig3_all", ["model=small", "seed=0"]),
        (
            CONF_DIR,
            "config",
            ["prompt_len=1,20", "model=small,xl", "init=random_uniform,sampled_vocab"],
        ),
    ],
)
def test_the_cost_plan_prices_the_configs_hydra_composes(config_dir, config_name, overrides):
    """Every job repro.cost prices, a panel sweep's and a basic sweep's, equals the config Hydra
    composes from its overrides alone."""
    plan = sweep_plan(
        overrides,
        multirun=True,
        config_dir=None if config_dir == CONF_DIR else str(config_dir),
        config_name=config_name,
    )
    assert len(plan.jobs) > 4
    for job_overrides, cfg in plan.jobs:
        assert cfg == _hydra(config_dir, config_name, job_overrides), job_overrides


def test_groups_are_composed_once_per_combination_and_the_rest_takes_hydras_path():
    """Plain values are set on a copy; a job with no plain value, an added key or a value Hydra
    refuses is composed by Hydra itself (so its error is Hydra's)."""
    loads: list[list[str]] = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):

        def load(overrides):
            loads.append(list(overrides))
            return compose("config", overrides=overrides, return_hydra_config=True)

        base = load([])
        repo = GlobalHydra.instance().config_loader().repository
        composer = GroupComposer(load, is_group=lambda k: k in base.hydra.runtime.choices)
        assert repo.group_exists("model")
        loads.clear()
        for p in (1, 5, 20):
            for seed in (0, 1):
                cfg = composer(["model=small", f"prompt_len={p}", f"seed={seed}"])
                assert (cfg.prompt_len, cfg.seed, cfg.model.size) == (p, seed, "small")
                assert set(cfg.hydra) == {"sweep"}  # the run directory, nothing else
        assert loads == [["model=small"]]  # one composition for six jobs

        loads.clear()
        composer(["model=base"])
        composer(["model=base", "+extra=1"])
        assert loads == [["model=base"], ["model=base", "+extra=1"]]
        loads.clear()
        with pytest.raises(Exception, match="prompt_len"):
            composer(["model=base", "prompt_len=many"])
        assert loads[-1] == ["model=base", "prompt_len=many"]  # Hydra's own error
        same = compose("config", overrides=["model=base", "prompt_len=7"])
    fast = composer(["model=base", "prompt_len=7"])
    with open_dict(fast), open_dict(same):
        del fast["hydra"]
    assert OmegaConf.to_container(fast) == OmegaConf.to_container(same)
