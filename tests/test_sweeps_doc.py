"""Every job count docs/sweeps.md states is recomputed from the sweep files, as the sweepers
expand them (Hydra's basic sweeper; the panel sweeper: ``repro.panels``), so none can drift.
Listed counts need one composition per file (fast); distinct counts compose every job to name
its run directory (minutes: marked slow)."""

import math
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import repro.rundir  # noqa: F401  (the run_name resolver)
from repro.config import CONF_DIR, register_configs
from repro.cost.plan import sweep_plan
from repro.panels import expand_panels

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs/sweeps.md").read_text()
TEXT = " ".join(DOC.split())  # the page with its line breaks undone


def listed_jobs(config_dir: str, name: str, overrides: tuple[str, ...] = ()) -> int:
    """How many jobs the sweep file lists: its panels expanded, or the basic sweeper's product."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / config_dir), version_base="1.3"):
        base = compose(
            name, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]"], return_hydra_config=True
        )
    sweeper = base.hydra.sweeper
    params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}
    if sweeper.get("panels"):
        return len(expand_panels(OmegaConf.to_container(sweeper.panels), params, overrides))
    args = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    (jobs,) = BasicSweeper.split_arguments(
        OverridesParser.create().parse_overrides(args), max_batch_size=None
    )
    return len(jobs)


TABLE = re.findall(r"^\| `(\w+)\.yaml` \|[^|]*\| ([\d × ]+) = (\d+) \|", DOC, flags=re.MULTILINE)


def test_the_page_states_the_counts_this_test_checks():
    assert [name for name, _, _ in TABLE] == [
        "fig3a_prompt_len",
        "fig3b_init",
        "fig3c_objective",
        "fig3d_lm_adapt_steps",
        "fig1_scale",
    ]


@pytest.mark.parametrize(("name", "product", "count"), TABLE, ids=[row[0] for row in TABLE])
def test_each_sweep_file_lists_the_jobs_its_row_says(name, product, count):
    factors = [int(f) for f in product.split("×")]
    assert math.prod(factors) == int(count)  # sizes × values × seeds
    assert listed_jobs("sweeps", name) == int(count)


def test_the_twins_and_the_narrowed_sweep_count_what_the_page_says():
    twins = re.findall(r"`sweeps/(\w+)/(\w+)\.yaml` \([^)]*?(\d+) jobs\)", TEXT)
    assert [t[:2] for t in twins] == [("smoke", "fig1_scale"), ("toy", "fig1_scale")]
    for directory, name, count in twins:
        assert listed_jobs(f"sweeps/{directory}", name) == int(count), (directory, name)
    (narrowed,) = re.findall(r"--config-name fig3a_prompt_len (model=\S+ seed=\S+) +# (\d+)", DOC)
    assert listed_jobs("sweeps", "fig3a_prompt_len", tuple(narrowed[0].split())) == int(narrowed[1])
    (files,) = re.findall(r"the four panel files' (\d+) jobs", TEXT)
    assert int(files) == sum(int(count) for name, _, count in TABLE if name.startswith("fig3"))


def test_the_panel_sweeps_list_what_the_page_says():
    (paper,) = re.findall(r"`(panels: .*? each run once\))`", TEXT)
    per_panel = dict(re.findall(r"(fig3\w+) (\d+)", paper))
    assert listed_jobs("sweeps", "fig3_all") == sum(map(int, per_panel.values()))
    assert f"= {sum(map(int, per_panel.values()))} listed" in paper
    (toy,) = re.findall(r"`sweeps/toy/run_all\.sh`: (\d+) listed, (\d+) distinct", TEXT)
    assert listed_jobs("sweeps/toy", "fig3_all") == int(toy[0])


@pytest.mark.slow
def test_the_panel_sweeps_run_the_distinct_jobs_the_page_says():
    """The sweeper's own line, word for word, and the toy twin's distinct count (every job
    composed to name its run directory)."""
    (paper,) = re.findall(r"`(panels: .*? each run once\))`", TEXT)
    assert sweep_plan(
        [], multirun=True, config_dir=str(ROOT / "sweeps"), config_name="fig3_all"
    ).panel_line == (paper)
    (distinct,) = re.findall(r"that makes (\d+) distinct runs", TEXT)
    assert f"{distinct} distinct" in paper
    (toy,) = re.findall(r"`sweeps/toy/run_all\.sh`: (\d+) listed, (\d+) distinct", TEXT)
    plan = sweep_plan(
        [], multirun=True, config_dir=str(ROOT / "sweeps/toy"), config_name="fig3_all"
    )
    assert (len(plan.listed), len(plan.jobs)) == tuple(map(int, toy))
