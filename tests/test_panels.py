"""A sweep made of panels (hydra/sweeper=panels, repro/panels.py): every distinct run once."""

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
from test_bad_input import assert_one_error, run_cli

from repro.cost.cli import main
from repro.cost.plan import sweep_configs, sweep_jobs, sweep_plan
from repro.estimate import estimate
from repro.panels import PanelClash, distinct_jobs, expand_panels

ROOT = Path(__file__).resolve().parents[1]


# --- expansion and de-duplication -----------------------------------------------------------


def test_each_panel_is_the_product_of_shared_axes_its_own_and_the_command_line():
    listed = expand_panels(
        {"a": {"prompt_len": "1,5"}, "b": {"init": "x,y", "seed": "7"}},
        {"seed": "0,1"},
        ["prompt_len=3"],  # the command line wins in every panel that has the key
    )
    assert listed == [
        ("a", ["seed=0", "prompt_len=3"]),
        ("a", ["seed=1", "prompt_len=3"]),
        ("b", ["seed=7", "init=x", "prompt_len=3"]),  # the panel's own seed wins over shared
        ("b", ["seed=7", "init=y", "prompt_len=3"]),
    ]


def test_jobs_naming_one_directory_run_once_and_remember_every_panel():
    listed = [("a", ["p=1"]), ("a", ["p=100"]), ("b", ["i=x"]), ("b", ["i=class_label"])]
    where = {"p=1": "d1", "p=100": "default", "i=x": "dx", "i=class_label": "default"}
    fingerprinted = []

    def fingerprint(overrides):
        fingerprinted.append(tuple(overrides))
        return "same config"

    jobs = distinct_jobs(listed, lambda o: where[o[0]], fingerprint)
    assert [(j.overrides, j.panels) for j in jobs] == [
        (("p=1",), ("a",)),
        (("p=100",), ("a", "b")),
        (("i=x",), ("b",)),
    ]
    assert sorted(fingerprinted) == [("i=class_label",), ("p=100",)]  # only the shared dir


def test_jobs_naming_one_directory_with_different_configs_are_refused():
    listed = [("a", ["p=1"]), ("b", ["p=5"])]
    with pytest.raises(PanelClash, match=r"`p=1` \(panel a\) and `p=5` \(panel b\) both name"):
        distinct_jobs(listed, lambda o: "one dir", lambda o: o[0])


@pytest.mark.parametrize("panels", [None, {}, {"a": {}}, {"a": "prompt_len=1,5"}])
def test_panels_that_are_not_a_mapping_of_axes_are_refused(panels):
    with pytest.raises(ValueError, match="hydra.sweeper.panels"):
        expand_panels(panels, {}, [])


# --- the sweep files: the union file runs exactly the panel files' jobs, each once ----------


def _by_run_dir(plan_jobs):
    """{run name: config, wherever its sweep puts it} of a sweep's jobs."""
    return {cfg.name: dataclasses.replace(cfg, sweep_name="x") for _, cfg in plan_jobs}


def _is_span_corruption_twin(cfg, step_zero) -> bool:
    """Whether ``cfg`` is panel (c)'s span_corruption run of Figure 3(d)'s 0-step job: the
    same backbone (T5.1.1) and targets, every other axis the same."""
    axes = ("model", "task", "seed", "prompt_len", "init", "trainer", "method")
    return cfg.objective.name == "span_corruption" and all(
        getattr(cfg, a) == getattr(step_zero, a) for a in axes
    )


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
@pytest.mark.parametrize(
    ("config_dir", "union", "narrow"),
    [
        ("sweeps", "fig3_all", ["model=small", "seed=0"]),
        ("sweeps/toy", "fig3_all", ["model=toy_small", "task=toy_review", "seed=0"]),
    ],
)
def test_the_union_file_runs_every_distinct_job_of_the_four_panel_files_once(
    config_dir, union, narrow
):
    panel_files = ["fig3a_prompt_len", "fig3b_init", "fig3c_objective", "fig3d_lm_adapt_steps"]
    expand = dict(multirun=True, config_dir=str(ROOT / config_dir))
    plan = sweep_plan(narrow, config_name=union, **expand)
    jobs = _by_run_dir(plan.jobs)
    assert len(jobs) == len(plan.jobs), "a run directory is launched twice"

    listed, wanted, step_zero = 0, {}, []
    for name in panel_files:
        for _, cfg in sweep_jobs(narrow, config_name=name, **expand):
            listed += 1
            if cfg.objective.name == "lm_adapt" and cfg.lm_adapt_steps == 0:
                step_zero.append(cfg)  # run once, as panel (c)'s span_corruption run
            else:
                wanted[cfg.name] = dataclasses.replace(cfg, sweep_name="x")
    assert jobs == wanted
    assert step_zero
    for cfg in step_zero:
        assert [c for c in jobs.values() if _is_span_corruption_twin(c, cfg)], cfg.name
    assert listed > len(jobs)  # the default point really was listed more than once
    assert plan.panel_line.startswith("panels: fig3a_prompt_len ")


def test_cost_prices_the_panels_listed_against_the_distinct_jobs(capsys):
    code = main(
        ["-m", "--config-dir", str(ROOT / "sweeps"), "--config-name", "fig3_all",
         "model=small", "seed=0"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    total, panels, dedup = out.splitlines()[-3:]
    assert panels == (
        "panels: fig3a_prompt_len 5, fig3b_init 3, fig3c_objective 3, fig3d_lm_adapt_steps 3 "
        "jobs = 14 listed, 11 distinct: 3 duplicate(s) dropped (1 run(s) listed by more than one "
        "panel, each run once)"
    )
    one = estimate(sweep_configs(["model=small", "task=superglue"])[0]).gpu_hours
    listed, saved = (float(x) for x in _numbers_before(dedup, "GPU-h"))
    distinct = float(total.split(" = ")[1].split()[0])  # the jobs' part of the one total
    assert saved == pytest.approx(listed - distinct, abs=0.01)
    assert saved == pytest.approx(3 * one, abs=0.01)  # the default point, three times over


def _numbers_before(line: str, unit: str) -> list[str]:
    words = line.replace("(", " ").split()
    return [w for w, after in itertools.pairwise(words) if after == unit]


# --- a real panel sweep ----------------------------------------------------------------------

SMOKE_PANELS = """
defaults:
  - config
  - override /experiment: smoke
  - override hydra/sweeper: panels
  - _self_
sweep_name: panels
hydra:
  sweeper:
    params:
      seed: "0"
    panels:
      lengths:
        prompt_len: 1,20
      inits:
        init: random_uniform,class_label
"""


def test_a_panel_sweep_trains_the_shared_point_once(tmp_path, tiny_t5_dir, monkeypatch, capsys):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/panels.yaml").write_text(SMOKE_PANELS)
    args = [
        "-m",
        "--config-dir",
        str(tmp_path / "conf"),
        "--config-name",
        "panels",
        f"model.path={tiny_t5_dir}",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.steps=2",
        "trainer.eval_every=2",
        "task.max_eval_examples=8",
    ]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "lengths 2, inits 2 jobs = 4 listed, 3 distinct: 1 duplicate(s) dropped" in out
    sweep = tmp_path / "multirun/panels"
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert runs == [
        "toy_keyword-tiny-lm_adapt100k-p1-class_label-s0",
        "toy_keyword-tiny-lm_adapt100k-p20-class_label-s0",  # the shared point: once
        "toy_keyword-tiny-lm_adapt100k-p20-random_uniform-s0",
    ]
    for run in runs:
        assert json.loads((sweep / run / "result.json").read_text())["status"] == "finished"
    assert f"sweep {sweep}: 3 jobs: 3 finished" in out + err


def test_a_panel_sweep_whose_panels_clash_runs_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "conf").mkdir()
    clash = SMOKE_PANELS.replace(
        "sweep_name: panels", f"sweep_name: panels\nname: one\npaths:\n  root: {tmp_path}"
    )
    (tmp_path / "conf/panels.yaml").write_text(clash)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *["-m", "--config-dir", str(tmp_path / "conf"), "--config-name", "panels"],
    )
    assert_one_error(
        code, err, "`seed=0 prompt_len=1` (panel lengths) and `seed=0 prompt_len=20` (panel "
        "lengths) both name the run directory", "multirun/panels/one"
    )  # fmt: skip
    assert not (tmp_path / "multirun").exists()
