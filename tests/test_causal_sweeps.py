"""sweeps/causal/: Figure 3(a)-(d) on the Pythia ladder and Figure 3(a), 3(c) on Qwen2.5
(issue 29). Each file's header says how to launch, collect, plot and price it; its jobs compose
to valid configs of a causal backbone and load the checkpoints the header names."""

import itertools

import pytest
from test_sweeps import ROOT, compose_job, header, job_dict, sweep_jobs

from repro.checkpoints import checkpoint_for

CAUSAL = ROOT / "sweeps" / "causal"
PYTHIA = ("70m", "160m", "410m", "1b", "1b4", "2b8", "6b9", "12b")
PYTHIA = tuple(f"pythia_{s}" for s in PYTHIA)
QWEN = tuple(f"qwen2_5_{s}" for s in ("0b5", "1b5", "3b", "7b", "14b", "32b", "72b"))
SEEDS = ("0", "1", "2")
# file → (its models, the axis it varies, the axis's values)
SWEEPS = {
    "fig3a_prompt_len_pythia": (PYTHIA, "prompt_len", ("1", "5", "20", "100", "150")),
    "fig3b_init_pythia": (PYTHIA, "init", ("random_uniform", "sampled_vocab", "class_label")),
    "fig3c_objective_qwen2_5": (QWEN, "objective", ("next_token", "instruct")),
    "fig3d_pretrain_steps_pythia": (PYTHIA, "lm_adapt_steps", ("1000", "10000", "50000", "143000")),
    "fig3a_prompt_len_qwen2_5": (QWEN, "prompt_len", ("1", "5", "20", "100", "150")),
}


def test_one_file_per_causal_panel():
    assert sorted(p.stem for p in CAUSAL.glob("*.yaml")) == sorted(SWEEPS)


@pytest.mark.parametrize("stem", sorted(SWEEPS))
def test_a_causal_sweep_is_its_models_x_its_values_x_3_seeds(stem):
    models, axis, values = SWEEPS[stem]
    jobs = [job_dict(j) for j in sweep_jobs(CAUSAL, stem)]
    got = [(j["model"], j[axis], j["seed"]) for j in jobs]
    assert len(got) == len(set(got)) == len(models) * len(values) * 3
    assert set(got) == set(itertools.product(models, values, SEEDS))
    text = header(CAUSAL / f"{stem}.yaml")
    assert f"python -m repro.run -m --config-dir sweeps/causal --config-name {stem}\n" in text
    assert f"python -m repro.collect multirun/causal_{stem} -o results/causal_{stem}.csv" in text
    assert f"python -m repro.cost -m --config-dir sweeps/causal --config-name {stem}" in text
    assert f"= {len(jobs)} jobs" in text.replace("\n", " ")


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(SWEEPS))
def test_a_causal_sweeps_jobs_load_causal_checkpoints(stem):
    """Every model and every value, composed: family causal, the hub id of the axis's value,
    a run directory of its own."""
    models, axis, values = SWEEPS[stem]
    jobs = sweep_jobs(CAUSAL, stem)
    names = set()
    for model, value in zip(models, itertools.cycle(values), strict=False):
        (job,) = [j for j in jobs if job_dict(j) == {"model": model, axis: value, "seed": "0"}]
        cfg, sweep_dir = compose_job(CAUSAL, stem, job)
        assert cfg.model.family == "causal" and sweep_dir.endswith(f"multirun/causal_{stem}")
        assert cfg.task.name == "superglue" and cfg.trainer.steps == 30_000
        checkpoint = checkpoint_for(cfg)
        if axis == "lm_adapt_steps" and value != "143000":
            hub_size = {"pythia_1b4": "1.4b", "pythia_2b8": "2.8b", "pythia_6b9": "6.9b"}.get(
                model, model.removeprefix("pythia_")
            )
            assert checkpoint == f"EleutherAI/pythia-{hub_size}@step{value}"
        elif axis == "objective" and value == "instruct":
            assert checkpoint.startswith("Qwen/Qwen2.5-") and checkpoint.endswith("-Instruct")
        else:
            assert checkpoint.startswith(("EleutherAI/pythia-", "Qwen/Qwen2.5-"))
            assert "@" not in checkpoint and not checkpoint.endswith("-Instruct")
        names.add(cfg.name)
    assert len(names) == len(models)
    # the steps of Figure 3(d) give each run its own directory
    if axis == "lm_adapt_steps":
        steps = [
            j for j in jobs if job_dict(j)["model"] == "pythia_70m" and job_dict(j)["seed"] == "0"
        ]
        assert len({compose_job(CAUSAL, stem, j)[0].name for j in steps}) == len(values)


def test_the_toy_causal_twin_is_3_sizes_x_2_tasks_x_5_lengths_x_3_seeds():
    """sweeps/causal/toy/fig3a_prompt_len.yaml: the causal toy Figure 3(a), offline."""
    toy = CAUSAL / "toy"
    jobs = [job_dict(j) for j in sweep_jobs(toy, "fig3a_prompt_len")]
    sizes = ("toy_causal_small", "toy_causal_base", "toy_causal_large")
    want = itertools.product(
        sizes, ("toy_review", "toy_fact"), ("1", "5", "20", "100", "150"), SEEDS
    )
    assert sorted((j["model"], j["task"], j["prompt_len"], j["seed"]) for j in jobs) == sorted(want)
    text = header(toy / "fig3a_prompt_len.yaml")
    assert "= 90 jobs" in text.replace("\n", " ")
    assert (
        "python -m repro.run -m --config-dir sweeps/causal/toy --config-name fig3a_prompt_len"
        in text
    )
    cfg, sweep_dir = compose_job(toy, "fig3a_prompt_len", [f"{k}={v}" for k, v in jobs[-1].items()])
    assert cfg.model.family == "causal" and cfg.objective.name == "next_token"
    assert sweep_dir.endswith("multirun/toy_causal_figure3") and cfg.trainer.steps == 100
    assert checkpoint_for(cfg).endswith("toy_models/toy_causal_large/step_1500")
