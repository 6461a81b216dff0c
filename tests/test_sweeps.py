"""Every sweep file: its launch command, its jobs as Hydra's sweeper makes them, their configs.

Jobs are expanded exactly as ``python -m repro.run -m --config-dir <dir> --config-name <file>``
does: the file's ``hydra.sweeper.params`` first, then the command line, through Hydra's own
override parser and ``BasicSweeper.split_arguments`` — without launching anything. The smoke
twins then run end to end (slow): their header commands as written, shrunk, → collect → plot.
"""

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

import repro.run  # noqa: F401  (registers the run-name resolver and the config schemas)
from repro.checkpoints import checkpoint_for
from repro.cli import RunError
from repro.collect.rundirs import collect_runs
from repro.collect.superglue import MODEL_LM_ADAPT_STEPS, PAPER_DEFAULTS
from repro.config import RELEASED_LM_ADAPT_STEPS, Config
from repro.resolve import load_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SWEEPS = ROOT / "sweeps"
SMOKE = SWEEPS / "smoke"

SIZES = ("small", "base", "large", "xl", "xxl")
SEEDS = (0, 1, 2)
# sweep file → the axis it varies and the paper's values (Figure 3 legends; Figure 1: size only)
PANELS = {
    "fig3a_prompt_len": ("prompt_len", (1, 5, 20, 100, 150)),
    "fig3b_init": ("init", ("random_uniform", "sampled_vocab", "class_label")),
    "fig3c_objective": ("objective", ("span_corruption", "span_corruption_sentinel", "lm_adapt")),
    "fig3d_lm_adapt_steps": ("lm_adapt_steps", (0, 10_000, 50_000, 100_000)),
    "fig1_scale": ("method", ("prompt", "model", "model_multitask")),
}
# smoke twin → its axis values on the tiny model and its seeds
TWINS = {
    "fig3a_prompt_len": ("prompt_len", (1, 5, 20), (0, 1)),
    "fig3b_init": ("init", ("random_uniform", "sampled_vocab", "class_label"), (0, 1)),
    "fig3c_objective": (
        "objective",
        ("span_corruption", "span_corruption_sentinel", "lm_adapt"),
        (0, 1),
    ),
    "fig3d_lm_adapt_steps": ("lm_adapt_steps", (0, 20, 50), (0, 1)),
    "fig1_scale": ("method", ("prompt", "model", "model_multitask"), (0, 1)),
}
# the tasks of a twin's jobs: Figure 1's twin compares methods on a mixture of two toy tasks
TWIN_TASKS = {"fig1_scale": ("toy_smoke", ("toy_keyword", "toy_polarity"))}


# --- expanding a sweep as Hydra does -----------------------------------------------------------


def _init(sweep_dir: Path | None):
    """Compose context: conf/ alone, or a sweep dir with conf/ on the search path (--config-dir)."""
    return initialize_config_dir(config_dir=str(sweep_dir or CONF), version_base="1.3")


def _searchpath(sweep_dir: Path | None) -> list[str]:
    return [f"hydra.searchpath=[file://{CONF}]"] if sweep_dir else []


def sweep_jobs(sweep_dir: Path | None, name: str, *overrides: str) -> list[list[str]]:
    """The override list of every job of ``python -m repro.run -m [--config-dir sweep_dir
    --config-name name] overrides...``, in launch order."""
    with _init(sweep_dir):
        cfg = compose(name, overrides=_searchpath(sweep_dir), return_hydra_config=True)
        params = cfg.hydra.sweeper.params or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(overrides)
        parsed = OverridesParser.create().parse_overrides(args)
        (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return jobs


def compose_job(sweep_dir: Path | None, name: str, job: list[str]) -> tuple[Config, str]:
    """One job's validated config and its Hydra sweep directory."""
    with _init(sweep_dir):
        cfg = compose(name, overrides=[*_searchpath(sweep_dir), *job], return_hydra_config=True)
    sweep_dir_value = OmegaConf.select(cfg, "hydra.sweep.dir")
    with open_dict(cfg):
        del cfg["hydra"]  # its runtime fields are only filled in by a real launch
    return load_config(cfg), sweep_dir_value


def job_dict(job: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in job)


def header(path: Path) -> str:
    """The comment block above the first YAML line."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return "\n".join(lines)


def axis_value(cfg: Config, axis: str):
    return cfg.axes[axis]


# --- the GPU sweeps ----------------------------------------------------------------------------


def test_one_sweep_file_and_one_twin_per_panel():
    # and fig3_all: the four Figure 3 panels as one panel sweep (tests/test_panels.py)
    assert sorted(p.stem for p in SWEEPS.glob("fig*.yaml")) == sorted([*PANELS, "fig3_all"])
    assert sorted(p.stem for p in SMOKE.glob("*.yaml")) == sorted(TWINS)


# table sweep file → (its task values, seeds, the commands its header must give after the sweep)
TABLES = {
    "table1_squad_mrqa": (
        {"squad"},
        3,
        "python -m repro.transfer multirun/table1_squad_mrqa --to mrqa",
    ),
    "table2_qqp_mrpc": (
        {"qqp", "mrpc"},
        3,
        "python -m repro.transfer multirun/table2_qqp_mrpc --to mrpc --to qqp",
    ),
    "table3_ensemble": (
        {"superglue"},
        5,
        "python -m repro.ensemble multirun/table3_ensemble -o results/table3_ensemble",
    ),
}


def test_one_sweep_file_per_table_and_toy_twins_of_tables_2_and_3():
    assert sorted(p.stem for p in SWEEPS.glob("table*.yaml")) == sorted(TABLES)
    assert sorted(p.stem for p in (SWEEPS / "toy").glob("table*.yaml")) == [
        "table2_transfer",
        "table3_ensemble",
    ]


# the transfer tables (1-2) compare prompt tuning with model tuning, each on its own recipe
TABLE_METHODS = {"table1_squad_mrqa": ("prompt", "model"), "table2_qqp_mrpc": ("prompt", "model")}


@pytest.mark.parametrize("stem", sorted(TABLES))
def test_table_sweep_jobs_compose_with_their_header_commands(stem):
    tasks, seeds, command = TABLES[stem]
    methods = TABLE_METHODS.get(stem, ("prompt",))
    text = header(SWEEPS / f"{stem}.yaml")
    assert f"python -m repro.run -m --config-dir sweeps --config-name {stem}" in text
    assert command in text
    jobs = sweep_jobs(SWEEPS, stem)
    assert len(jobs) == len(tasks) * seeds * len(methods)
    configs = [compose_job(SWEEPS, stem, job)[0] for job in jobs]
    assert {c.task.name for c in configs} == tasks
    assert {c.seed for c in configs} == set(range(seeds))
    assert {c.model.size for c in configs} == {"xxl"}
    assert {c.method.name for c in configs} == set(methods)
    assert len({c.name for c in configs}) == len(configs)
    # each method on its own recipe (conf/method/): the sweep file overrides neither's
    for c in configs:
        if c.method.name == "model":
            assert c.objective.name == "span_corruption"
            assert (c.trainer.optimizer.lr, c.trainer.optimizer.parameter_scale) == (0.001, True)
        else:
            assert c.objective.name == "lm_adapt" and c.trainer.optimizer.lr == 0.3


@pytest.mark.parametrize(
    "stem, sweep_name, methods, n",
    [
        ("table2_transfer", "toy_transfer", {"prompt", "model"}, 6),
        ("table3_ensemble", "toy_tables", {"prompt"}, 6),
    ],
)
def test_toy_table_sweeps(stem, sweep_name, methods, n):
    """Table 3's toy prompts are in multirun/toy_tables/; Table 2's toy twin holds model-tuning
    runs, which an ensemble refuses, so it has multirun/toy_transfer/ to itself."""
    configs = [compose_job(SWEEPS / "toy", stem, j)[0] for j in sweep_jobs(SWEEPS / "toy", stem)]
    assert {c.sweep_name for c in configs} == {sweep_name}
    assert {c.model.size for c in configs} == {"toy_xl"} and {c.prompt_len for c in configs} == {20}
    assert {c.method.name for c in configs} == methods
    assert len({c.name for c in configs}) == len(configs) == n
    assert f"multirun/{sweep_name}" in header(SWEEPS / "toy" / f"{stem}.yaml")


@pytest.mark.parametrize("stem", sorted(PANELS))
def test_sweep_header_has_the_exact_launch_command(stem):
    text = header(SWEEPS / f"{stem}.yaml")
    assert f"python -m repro.run -m --config-dir sweeps --config-name {stem}\n" in text + "\n"
    assert f"python -m repro.collect multirun/{stem} -o results/{stem}.csv" in text


@pytest.mark.parametrize("stem", sorted(PANELS))
def test_sweep_covers_5_sizes_x_its_values_x_3_seeds(stem):
    axis, values = PANELS[stem]
    jobs = [job_dict(j) for j in sweep_jobs(SWEEPS, stem)]
    want = {
        (size, *((str(v),) if axis else ()), str(seed))
        for size, v, seed in itertools.product(SIZES, values or [None], SEEDS)
    }
    got = [(j["model"], *((j[axis],) if axis else ()), j["seed"]) for j in jobs]
    assert len(got) == len(set(got)) == 5 * max(len(values), 1) * 3
    assert set(got) == want
    assert all(set(j) == {"model", "seed", *([axis] if axis else [])} for j in jobs)


def _diagonal(jobs: list[list[str]], stem: str) -> list[list[str]]:
    """A few jobs that between them take every size, every axis value and every seed."""
    axis, values = PANELS[stem]
    n = max(len(SIZES), len(values))
    picks = []
    for i in range(n):
        want = {"model": SIZES[i % 5], "seed": str(SEEDS[i % 3])}
        if axis:
            want[axis] = str(values[i % len(values)])
        picks += [j for j in jobs if job_dict(j) == want]
    assert len(picks) == n
    return picks


def _check_gpu_job(cfg: Config, sweep_dir: str, stem: str, job: dict[str, str]) -> None:
    axis, _ = PANELS[stem]
    assert cfg.model.size == job["model"] and cfg.seed == int(job["seed"])
    assert cfg.sweep_name == stem and sweep_dir == f"./multirun/{stem}"
    assert cfg.task.name == "superglue" and cfg.task.data_dir is None
    assert cfg.model.path is None and cfg.logger.name == "none"
    if (
        cfg.method.name != "prompt"
    ):  # Figure 1's model tuning: its own recipe (docs/model_tuning.md)
        _check_model_tuning_job(cfg)
        return
    # non-ablated axes at the paper's defaults
    for other, default in PAPER_DEFAULTS.items():
        if other == axis or (axis == "objective" and other == "lm_adapt_steps"):
            continue
        if default == MODEL_LM_ADAPT_STEPS:  # the T5 sizes' own: Google's release
            default = RELEASED_LM_ADAPT_STEPS
        assert axis_value(cfg, other) == default, (stem, other)
    if axis:
        assert str(axis_value(cfg, axis)) == job[axis]
    # the paper's trainer: 30K steps, batch 32, constant lr 0.3 Adafactor, eval every 1K
    t = cfg.trainer
    assert (t.steps, t.batch_size, t.eval_every) == (30_000, 32, 1_000)
    assert t.grad_accum_auto and 32 % t.grad_accum == 0  # micro-batches that fit the GPU
    assert (t.optimizer.lr, t.optimizer.decay_rate, t.optimizer.weight_decay) == (0.3, 0.8, 1e-5)
    assert t.optimizer.weight_decay_lr_scaled is False and t.z_loss == 0.0
    assert cfg.init.low == -0.5 and cfg.model.dropout == 0.1


def _check_model_tuning_job(cfg: Config) -> None:
    """The paper's §3.1: the public T5.1.1, the T5 library's fine-tuning defaults (constant lr
    0.001, Adafactor with parameter scaling, no weight decay), 2^16 tokens a batch (2^20 for
    the multi-task mixture), dropout 0.1; no prompt."""
    assert cfg.objective.name == "span_corruption" and cfg.axes["prompt_len"] is None
    t = cfg.trainer
    batch = 2048 if cfg.method.name == "model_multitask" else 128
    assert (t.steps, t.batch_size, t.eval_every) == (30_000, batch, 1_000)
    assert (t.optimizer.lr, t.optimizer.weight_decay, t.optimizer.parameter_scale) == (
        0.001,
        0.0,
        True,
    )
    assert cfg.model.dropout == 0.1


def _expected_checkpoint(cfg: Config) -> str | None:
    size = cfg.model.size
    if cfg.objective.name != "lm_adapt" or cfg.lm_adapt_steps == 0:
        return f"google/t5-v1_1-{size}"
    if cfg.lm_adapt_steps == 100_000:
        return f"google/t5-{size}-lm-adapt"
    return None  # the suite's own; missing here


def _check_checkpoint(cfg: Config) -> None:
    want = _expected_checkpoint(cfg)
    if want is not None:
        assert checkpoint_for(cfg) == want
    else:
        with pytest.raises(RunError, match=f"python -m repro.lm_adapt model={cfg.model.size}"):
            checkpoint_for(cfg)


@pytest.mark.parametrize("stem", sorted(PANELS))
def test_sweep_jobs_compose_at_the_paper_defaults(stem):
    jobs = sweep_jobs(SWEEPS, stem)
    names = set()
    for job in _diagonal(jobs, stem):
        cfg, sweep_dir = compose_job(SWEEPS, stem, job)
        _check_gpu_job(cfg, sweep_dir, stem, job_dict(job))
        _check_checkpoint(cfg)
        names.add(cfg.name)
    assert len(names) == len(_diagonal(jobs, stem))  # one run directory per job


@pytest.mark.slow  # 8-19 s in the default run (CI runs it)
def test_fig3d_whole_curve_on_the_suites_own_lm_adaptation(tmp_path):
    """`fig3d_lm_adapt_steps lm_adapt_source=own` (the header's command): every step count > 0
    from repro.lm_adapt's step_<N>/, 0 = T5.1.1; 100K in a directory of its own, the other
    counts the default sweep's own runs (same backbone, same name, same fingerprint)."""
    from repro.rundir import fingerprint

    stem = "fig3d_lm_adapt_steps"
    text = header(SWEEPS / f"{stem}.yaml")
    launch = f"python -m repro.run -m --config-dir sweeps --config-name {stem} lm_adapt_source=own"
    assert launch in text
    assert "python -m repro.lm_adapt model=small lm_adapt.steps=[10000,50000,100000]" in text
    lm_dir = tmp_path / "lm_adapt"
    narrow = ["model=small,xxl", "seed=0", f"paths.lm_adapt_dir={lm_dir}"]
    own_jobs = sweep_jobs(SWEEPS, stem, *narrow, "lm_adapt_source=own")
    auto_jobs = sweep_jobs(SWEEPS, stem, *narrow)
    assert len(own_jobs) == len(auto_jobs) == 8
    assert len(sweep_jobs(SWEEPS, stem, "lm_adapt_source=own")) == 60
    for own_job, auto_job in zip(own_jobs, auto_jobs, strict=True):
        own, _ = compose_job(SWEEPS, stem, own_job)
        auto, _ = compose_job(SWEEPS, stem, auto_job)
        size, steps = own.model.size, own.lm_adapt_steps
        assert own.axes["lm_adapt_source"] == ("none" if steps == 0 else "own")
        assert auto.axes["lm_adapt_source"] == {0: "none", 100_000: "released"}.get(steps, "own")
        if steps == 0:
            assert checkpoint_for(own) == f"google/t5-v1_1-{size}"
            continue
        command = f"python -m repro.lm_adapt model={size} lm_adapt.steps=[10000,50000,100000]"
        with pytest.raises(RunError, match=re.escape(command)):
            checkpoint_for(own)
        (lm_dir / size / f"step_{steps}").mkdir(parents=True)
        (lm_dir / size / f"step_{steps}/config.json").write_text("{}")
        assert checkpoint_for(own) == str(lm_dir / size / f"step_{steps}")
        if steps == 100_000:  # never the released run's directory
            assert own.name == f"superglue-{size}-lm_adapt100k_own-p100-class_label-s0"
            assert own.name != auto.name and fingerprint(own) != fingerprint(auto)
            assert checkpoint_for(auto) == f"google/t5-{size}-lm-adapt"
        else:
            assert own.name == auto.name and fingerprint(own) == fingerprint(auto)
    # the CPU twins compose with the option too (their step counts are all own already)
    for sweep_dir in (SMOKE, SWEEPS / "toy"):
        for job in sweep_jobs(sweep_dir, stem, "lm_adapt_source=own", "seed=0")[:4]:
            cfg, _ = compose_job(sweep_dir, stem, job)
            assert cfg.lm_adapt_source == "own"
            assert cfg.axes["lm_adapt_source"] == ("none" if cfg.lm_adapt_steps == 0 else "own")


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(PANELS))
def test_every_job_of_every_sweep_composes(stem):
    names = set()
    for job in sweep_jobs(SWEEPS, stem):
        cfg, sweep_dir = compose_job(SWEEPS, stem, job)
        _check_gpu_job(cfg, sweep_dir, stem, job_dict(job))
        _check_checkpoint(cfg)
        names.add(cfg.name)
    assert len(names) == len(sweep_jobs(SWEEPS, stem))


def test_command_line_overrides_narrow_a_sweep():
    jobs = sweep_jobs(SWEEPS, "fig3a_prompt_len", "model=small", "seed=0", "logger=wandb")
    assert [job_dict(j)["prompt_len"] for j in jobs] == ["1", "5", "20", "100", "150"]
    cfg, _ = compose_job(SWEEPS, "fig3a_prompt_len", jobs[0])
    assert (cfg.model.size, cfg.seed, cfg.logger.name) == ("small", 0, "wandb")
    assert cfg.sweep_name == "fig3a_prompt_len"  # the W&B group


def test_the_users_plain_prompt_len_sweep_keeps_working():
    """`python -m repro.run -m prompt_len=1,5,20,100,150`, as the user wrote it."""
    jobs = sweep_jobs(None, "config", "prompt_len=1,5,20,100,150")
    assert jobs == [[f"prompt_len={p}"] for p in (1, 5, 20, 100, 150)]
    for job, p in zip(jobs, (1, 5, 20, 100, 150), strict=True):
        cfg, sweep_dir = compose_job(None, "config", job)
        assert cfg.prompt_len == p and sweep_dir == "./multirun/sweep"
        assert cfg.name == f"superglue-base-lm_adapt100k-p{p}-class_label-s0"
        assert (cfg.model.size, cfg.init.name, cfg.objective.name) == (
            "base",
            "class_label",
            "lm_adapt",
        )


# --- the smoke twins ---------------------------------------------------------------------------


@pytest.mark.parametrize("stem", sorted(TWINS))
def test_smoke_twin_composes_on_the_tiny_model(stem, tmp_path):
    axis, values, seeds = TWINS[stem]
    text = header(SMOKE / f"{stem}.yaml")
    assert f"python -m repro.run -m --config-dir sweeps/smoke --config-name {stem}" in text
    jobs = sweep_jobs(SMOKE, stem, f"paths.cache_dir={tmp_path}")
    assert len(jobs) == max(len(values), 1) * len(seeds)
    lm_dir = tmp_path / "lm_adapt/tiny"
    for steps in (20, 50):  # what `python -m repro.lm_adapt model=tiny ...` makes for 3(d)
        (lm_dir / f"step_{steps}").mkdir(parents=True)
        (lm_dir / f"step_{steps}/config.json").write_text("{}")
    names, checkpoints = set(), {}
    for job in jobs:
        cfg, sweep_dir = compose_job(SMOKE, stem, job)
        assert cfg.model.size == "tiny"
        assert cfg.task.name == TWIN_TASKS.get(stem, ("toy_keyword",))[0]
        assert cfg.trainer.steps == 200 and cfg.sweep_name == f"smoke_{stem}"
        assert sweep_dir == f"./multirun/smoke_{stem}"
        assert cfg.seed in seeds
        if axis:
            assert axis_value(cfg, axis) in values
        names.add(cfg.name)
        checkpoints[axis_value(cfg, axis) if axis else None] = checkpoint_for(cfg)
    assert len(names) == len(jobs)  # distinct run directories
    tiny = str(tmp_path / "tiny-t5")
    if stem == "fig3d_lm_adapt_steps":  # the axis picks a different backbone per value
        assert checkpoints == {0: tiny, 20: str(lm_dir / "step_20"), 50: str(lm_dir / "step_50")}
    else:  # one tiny checkpoint for every job (3(c) cannot pick different objectives)
        assert set(checkpoints.values()) == {tiny}


def _header_commands(path: Path) -> list[list[str]]:
    """The shell commands of a header: lines `[VAR=value ...] python|jupyter ...`."""
    command = re.compile(r"^([A-Z_]+=\S+ )*(python|jupyter) ")
    return [shlex.split(line) for line in header(path).splitlines() if command.match(line)]


def _run(words: list[str], cwd: Path, env: dict, extra: list[str] = ()) -> None:
    """Run one header command (leading VAR=value words go to the environment)."""
    assigns, program = words[: _first_program(words)], words[_first_program(words) :]
    if program[0] == "python":
        program = [sys.executable, *program[1:]]
    env = {**env, **dict(a.split("=", 1) for a in assigns)}
    proc = subprocess.run(
        [*program, *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{' '.join(words)}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"


def _first_program(words: list[str]) -> int:
    return next(i for i, w in enumerate(words) if w in ("python", "jupyter"))


# Test-size runs: the twins' own commands with fewer steps and dev examples.
SHRINK = ["trainer.steps=16", "trainer.eval_every=8", "task.max_eval_examples=32"]


@pytest.fixture
def workdir(tmp_path, tiny_t5_dir):
    """A directory to run header commands in verbatim: sweeps/, analysis/ and the paper table
    linked in, the session's tiny model in a fresh cache (REPRO_CACHE)."""
    for sub in ("sweeps", "analysis"):
        (tmp_path / sub).symlink_to(ROOT / sub)
    (tmp_path / "results").mkdir()
    (tmp_path / "results/paper").symlink_to(ROOT / "results/paper")
    shutil.copytree(tiny_t5_dir, tmp_path / "cache/tiny-t5")
    env = {**os.environ, "REPRO_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env["REPRO_ROOT"] = str(tmp_path)  # relative paths in the notebooks: this directory
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return tmp_path, env


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(TWINS))
def test_smoke_twin_runs_end_to_end_and_plots(stem, workdir):
    cwd, env = workdir
    axis, values, seeds = TWINS[stem]
    commands = _header_commands(SMOKE / f"{stem}.yaml")
    assert len(commands) == (
        4 if stem == "fig3d_lm_adapt_steps" else 3
    )  # [lm_adapt,] run, collect, plot
    for words in commands:  # as written; the training runs shrunk
        prog = words[_first_program(words) :]
        _run(words, cwd, env, SHRINK if prog[:3] == ["python", "-m", "repro.run"] else [])

    runs = collect_runs([cwd / f"multirun/smoke_{stem}"])
    tasks = TWIN_TASKS.get(stem, (None, ("toy_keyword",)))[1]
    assert len(runs) == max(len(values), 1) * len(seeds) * len(tasks)
    assert set(runs["task"]) == set(tasks)
    assert (runs["status"] == "finished").all(), runs[["status", "error"]]
    assert set(runs["seed"]) == set(seeds)
    if axis:
        assert set(runs[axis]) == set(values)
    figures = cwd / "results/smoke/figures"
    png = figures / ("figure1.png" if stem == "fig1_scale" else f"figure3{stem[4]}_{axis}.png")
    assert png.exists() and png.stat().st_size > 10_000

    if stem == "fig3c_objective":  # one tiny checkpoint: these two are the same run
        by = runs.set_index(["objective", "seed"])["score"]
        for seed in seeds:
            assert by[("span_corruption", seed)] == by[("lm_adapt", seed)]
    if stem == "fig3d_lm_adapt_steps":  # each value trained on its own backbone
        import json

        used = {
            json.loads((Path(d) / "result.json").read_text())["checkpoint"] for d in runs["run_dir"]
        }
        cache = cwd / "cache"
        assert used == {
            str(cache / "tiny-t5"),
            str(cache / "lm_adapt/tiny/step_20"),
            str(cache / "lm_adapt/tiny/step_50"),
        }


def test_readme_figure3a_commands_are_the_sweep_files_own():
    """The README's "Reproduce Figure 3(a)" commands (the panel, all four panels in one sweep,
    the smoke twin) = the sweep files' headers (which the tests run)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Reproduce Figure 3(a)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    gpu, all_panels, smoke = (b.strip().splitlines() for b in blocks)
    in_header = [" ".join(c) for c in _header_commands(SWEEPS / "fig3a_prompt_len.yaml")]
    assert gpu == in_header
    assert all_panels == [" ".join(c) for c in _header_commands(SWEEPS / "fig3_all.yaml")]
    assert smoke == [" ".join(c) for c in _header_commands(SMOKE / "fig3a_prompt_len.yaml")]
    image = re.search(r"!\[[^\]]*\]\((results/smoke/[^)]+\.png)\)", section).group(1)
    assert (ROOT / image).stat().st_size > 10_000
    assert "tiny-model smoke run" in section


@pytest.mark.slow
def test_readme_main_job_runs_as_written(tmp_path):
    """The README's second command, verbatim, in an empty directory: 5 jobs, a frame, a panel."""
    import pandas as pd

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].splitlines()
    command = lines[lines.index(next(x for x in lines if x.startswith("# 2."))) + 1]
    assert command.startswith("python -m repro.run -m experiment=toy prompt_len=1,5,20,100,150")
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")

    def run_as_written() -> None:
        proc = subprocess.run(
            command.replace("python ", f"{sys.executable} "),
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    run_as_written()
    frame = pd.read_csv(tmp_path / "results/toy_prompt_len.csv")
    assert sorted(frame["prompt_len"]) == [1, 5, 20, 100, 150]
    assert set(frame["status"]) == {"finished"} and set(frame["task"]) == {"toy_review"}
    # the default toy model knows polarity (its probe): a 20-token prompt draws it out
    assert set(frame["size"]) == {"toy_xl"}
    assert frame.loc[frame["prompt_len"] == 20, "score"].item() > 90
    assert (tmp_path / "results/figures/figure3a_prompt_len.png").stat().st_size > 10_000
    run_as_written()  # again: the jobs are skipped, the frame and figure replaced (--overwrite)


@pytest.mark.slow  # 8-27 s in the default run (CI runs it)
def test_the_panel_sweeper_composes_each_job_as_hydra_does(tmp_path):
    """The panel sweeper composes the config groups once per combination and sets each job's
    plain values (prompt_len=, seed=, ...) on a copy, instead of composing every listed job
    from its YAML files (issue 30: 336 compositions were most of the 2:44 before the first
    job of sweeps/toy/fig3_all.yaml started): each job's config and run directory are Hydra's."""
    from types import SimpleNamespace

    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from hydra_plugins.repro_panels_sweeper.panels_sweeper import PanelsSweeper
    from repro.panels import expand_panels

    toy = ROOT / "sweeps" / "toy"
    with _init(toy):
        loader = GlobalHydra.instance().config_loader()
        args = [*_searchpath(toy), f"paths.root={tmp_path}"]
        master = loader.load_configuration("fig3_all", args, run_mode=RunMode.MULTIRUN)
        # (Hydra re-imports its plugin modules: the sweeper's __init__ is bypassed, not needed)
        sweeper = object.__new__(PanelsSweeper)
        sweeper.params = OmegaConf.to_container(master.hydra.sweeper.params)
        sweeper.panels = OmegaConf.to_container(master.hydra.sweeper.panels)
        sweeper._composed, sweeper._group_composer = {}, None
        sweeper.config = master
        sweeper.hydra_context = SimpleNamespace(config_loader=loader)
        narrow = ["model=toy_small", "seed=0", "task=toy_review", "trainer.steps=7"]
        listed = expand_panels(sweeper.panels, sweeper.params, narrow)
        assert len(listed) == 14
        for _, job in listed:
            fast, hydra = sweeper._sweep_config(job), loader.load_sweep_config(master, job)
            assert sweeper._run_dir(job) == str(
                (Path(str(hydra.hydra.sweep.dir)) / str(hydra.hydra.sweep.subdir)).absolute()
            )
            for cfg in (fast, hydra):
                with open_dict(cfg):
                    del cfg["hydra"]
            assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(
                hydra, resolve=True
            ), job
        # the groups were composed fewer times
        assert len(sweeper._group_composer._bases) < len(listed)
