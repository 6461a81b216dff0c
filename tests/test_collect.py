"""repro.collect: run dirs / W&B → one frame; SuperGLUE points with hand-computed mean and std."""

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from repro.collect.cli import main
from repro.collect.frame import AXES, CollectWarning, load_frame
from repro.collect.rundirs import collect_runs
from repro.collect.superglue import panel_runs, superglue_frame, superglue_scores
from repro.collect.wandb_runs import collect_wandb

AXIS_VALUES = {
    "size": "base",
    "params": 247577856,
    "objective": "lm_adapt",
    "lm_adapt_steps": 100000,
    "prompt_len": 100,
    "init": "class_label",
    "task": "rte",
    "seed": 0,
}


def result(**overrides):
    """A result.json as the trainer writes it (contract in the module docstring)."""
    out = {
        "status": "finished",
        "error": None,
        **AXIS_VALUES,
        "best_step": 12000,
        "metrics": {"accuracy": 81.2},
        "score": 81.2,
        "trainable_params": 76800,
        "frozen_params": 247577856,
        "wall_s": 1234.5,
        "versions": {"torch": "x", "transformers": "y"},
        "run_dir": "ignored",
        "wandb_id": None,
    }
    out.update(overrides)
    return out


def write_run(path, res=None, config=None, metrics_lines=1, raw=None):
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.yaml").write_text(config)
    if metrics_lines:
        (path / "metrics.jsonl").write_text('{"kind": "eval", "step": 0}\n' * metrics_lines)
    if raw is not None:
        (path / "result.json").write_text(raw)
    elif res is not None:
        (path / "result.json").write_text(json.dumps(res))
    return path


@pytest.fixture
def sweep(tmp_path):
    """A sweep dir: finished, failed, multi-metric, unfinished, corrupt and a superglue job."""
    root = tmp_path / "sweep"
    write_run(root / "0", result(seed=0))
    write_run(root / "1", result(seed=1, status="failed", error="CUDA OOM", metrics={}, score=None))
    write_run(
        root / "2",
        result(task="cb", metrics={"f1_macro": 70.0, "accuracy": 90.0}, score=80.0),
        config="prompt_len: 5\n",  # result.json wins over config.yaml
    )
    write_run(
        root / "3",
        config="model: {size: small, params: 76961152}\ntask: {name: wic}\nprompt_len: 20\n"
        "seed: 2\ninit: {name: sampled_vocab}\nobjective: {name: lm_adapt, lm_adapt_steps: 0}\n",
    )
    write_run(root / "4", raw='{"status": "finished", "score": 8', config="seed: 4\n")
    job = root / "5"
    job.mkdir()
    (job / "summary.json").write_text("{}")
    (job / "config.yaml").write_text("task: {name: superglue}\nseed: 7\n")
    write_run(job / "boolq", result(task="boolq", score=77.0, metrics={"accuracy": 77.0}))
    write_run(job / "cb")  # still training: axes from the job's config, task from the dir name
    write_run(job / ".hydra", config="seed: 99\n", metrics_lines=0)  # Hydra's own, not a run
    return root


def test_collect_runs_keeps_every_run_with_its_status(sweep):
    with pytest.warns(CollectWarning, match=r"4[/\\]result\.json"):
        df = collect_runs([sweep])
    assert list(df.columns[: len(AXES)]) == list(AXES)
    by_dir = {Path(r["run_dir"]).name: r for r in df.to_dict("records")}
    assert sorted(by_dir) == ["0", "1", "2", "3", "4", "boolq", "cb"]
    assert by_dir["0"]["status"] == "finished" and by_dir["0"]["score"] == 81.2
    assert by_dir["0"]["metric/accuracy"] == 81.2 and by_dir["0"]["wall_s"] == 1234.5
    assert by_dir["1"]["status"] == "failed" and by_dir["1"]["error"] == "CUDA OOM"
    assert math.isnan(by_dir["1"]["score"])
    assert by_dir["2"]["metric/f1_macro"] == 70.0 and by_dir["2"]["prompt_len"] == 100
    assert math.isnan(by_dir["0"]["metric/f1_macro"])
    # unfinished: axes from config.yaml groups
    three = by_dir["3"]
    assert three["status"] == "incomplete"
    assert (three["size"], three["params"], three["task"], three["prompt_len"]) == (
        "small",
        76961152,
        "wic",
        20,
    )
    assert (three["init"], three["objective"], three["lm_adapt_steps"], three["seed"]) == (
        "sampled_vocab",
        "lm_adapt",
        0,
        2,
    )
    # corrupt: kept, axes from config.yaml, the rest missing
    assert by_dir["4"]["status"] == "corrupt" and by_dir["4"]["seed"] == 4
    assert pd.isna(by_dir["4"]["task"])
    assert by_dir["boolq"]["task"] == "boolq"
    assert (by_dir["cb"]["status"], by_dir["cb"]["task"], by_dir["cb"]["seed"]) == (
        "incomplete",
        "cb",
        7,
    )
    assert df["status"].value_counts().to_dict() == {
        "finished": 3,
        "failed": 1,
        "incomplete": 2,
        "corrupt": 1,
    }


def test_collect_runs_accepts_a_run_dir_and_dedupes(sweep):
    df = collect_runs([sweep / "0", sweep / "0" / "result.json", sweep / "0"])
    assert len(df) == 1 and df.loc[0, "seed"] == 0


def test_collect_runs_missing_axes_are_na_and_params_filled_from_size(tmp_path):
    res = {"status": "finished", "size": "xl", "metrics": {"em": 60.0, "f1": 70.0}}
    write_run(tmp_path / "r", res)
    df = collect_runs([tmp_path])
    assert df.loc[0, "params"] == 2849757184  # PAPER.md's XL count
    assert df.loc[0, "score"] == 65.0  # no score written: mean of metrics
    assert pd.isna(df.loc[0, "task"]) and pd.isna(df.loc[0, "seed"])


def test_bad_status_and_non_object_are_corrupt(tmp_path):
    write_run(tmp_path / "a", result(status="done"))
    write_run(tmp_path / "b", raw="[1, 2]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = collect_runs([tmp_path])
    messages = " ".join(str(w.message) for w in caught)
    assert "a/result.json" in messages and "b/result.json" in messages
    assert list(df["status"]) == ["corrupt", "corrupt"]


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_runs([tmp_path / "nope"])


# ----------------------------------------------------------------------------- W&B


class FakeApi:
    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return list(self._runs)


def fake_run(run_id, config, summary, state="finished", group="g1"):
    return SimpleNamespace(
        id=run_id,
        path=["ent", "proj", run_id],
        config=config,
        summary=summary,
        state=state,
        group=group,
    )


def test_collect_wandb_has_the_same_columns_as_local(tmp_path):
    local = result(task="cb", metrics={"f1_macro": 70.0, "accuracy": 90.0}, score=80.0)
    write_run(tmp_path / "r", local)
    local_df = collect_runs([tmp_path])

    nested_config = {
        "model": {"size": "base", "params": 247577856},
        "task": {"name": "cb"},
        "prompt_len": 100,
        "seed": 0,
    }
    api = FakeApi(
        [
            fake_run("a1", nested_config, local),
            fake_run("a2", nested_config, {}, state="crashed"),  # died before logging a result
            fake_run("zz", nested_config, local, group="other"),
        ]
    )
    wb = collect_wandb("ent/proj", group="g1", api=api)
    assert api.calls == [("ent/proj", {"group": "g1"})]
    assert list(wb.columns) == list(local_df.columns)
    assert list(wb["wandb_id"]) == ["a1", "a2"]
    assert wb.loc[0, "run_dir"] == "ent/proj/a1"
    cols = [c for c in local_df.columns if c not in ("run_dir", "wandb_id")]
    pd.testing.assert_frame_equal(wb.loc[[0], cols], local_df.loc[[0], cols])
    assert wb.loc[1, "status"] == "failed" and wb.loc[1, "task"] == "cb"


# ----------------------------------------------------------------------------- SuperGLUE points


def runs_frame(rows):
    """Hand-made run frame: rows of (prompt_len, seed, task, score, status)."""
    return pd.DataFrame(
        [
            {
                "size": "small",
                "params": 76961152,
                "prompt_len": p,
                "seed": s,
                "task": t,
                "score": sc,
                "status": st,
                "init": "class_label",
            }
            for p, s, t, sc, st in rows
        ]
    )


HAND = runs_frame(
    [
        # prompt_len 1: per-seed means 70, 80, 60 → mean 70, sample std 10
        (1, 0, "t1", 60.0, "finished"),
        (1, 0, "t2", 80.0, "finished"),
        (1, 1, "t1", 70.0, "finished"),
        (1, 1, "t2", 90.0, "finished"),
        (1, 2, "t1", 50.0, "finished"),
        (1, 2, "t2", 70.0, "finished"),
        # prompt_len 100: seed 1 has t2 failed → excluded; seeds 85, 90 → mean 87.5, std 2.5·√2
        (100, 0, "t1", 80.0, "finished"),
        (100, 0, "t2", 90.0, "finished"),
        (100, 1, "t1", 90.0, "finished"),
        (100, 1, "t2", 0.0, "failed"),
        (100, 2, "t1", 85.0, "finished"),
        (100, 2, "t2", 95.0, "finished"),
        # a duplicate finished run of (100, seed 0, t1) from another sweep: averaged with 80 → 80
        (100, 0, "t1", 80.0, "finished"),
        # another task's run is ignored
        (100, 0, "other", 1.0, "finished"),
    ]
)


def test_superglue_frame_hand_computed_mean_and_std():
    with pytest.warns(CollectWarning, match=r"prompt_len': 100.*seed': 1.*missing t2"):
        out = superglue_frame(HAND, "prompt_len", tasks=["t1", "t2"])
    assert list(out.columns) == [
        "size",
        "params",
        "prompt_len",
        "mean",
        "std",
        "n_seeds",
        "n_incomplete",
    ]
    assert list(out["prompt_len"]) == [1, 100]
    one, hundred = out.iloc[0], out.iloc[1]
    assert one["mean"] == pytest.approx(70.0) and one["std"] == pytest.approx(10.0)
    assert (one["n_seeds"], one["n_incomplete"]) == (3, 0)
    assert hundred["mean"] == pytest.approx(87.5)
    assert hundred["std"] == pytest.approx(2.5 * math.sqrt(2))
    assert (hundred["n_seeds"], hundred["n_incomplete"]) == (2, 1)
    # population std on request: sqrt((0 + 100 + 100) / 3)
    with pytest.warns(CollectWarning):
        pop = superglue_frame(HAND, "prompt_len", tasks=["t1", "t2"], ddof=0)
    assert pop.iloc[0]["std"] == pytest.approx(math.sqrt(200 / 3))


def test_superglue_scores_reports_missing_tasks():
    with pytest.warns(CollectWarning):
        seeds = superglue_scores(HAND, "prompt_len", tasks=["t1", "t2"])
    row = seeds[(seeds["prompt_len"] == 100) & (seeds["seed"] == 1)].iloc[0]
    assert row["n_tasks"] == 1 and row["missing_tasks"] == "t2" and pd.isna(row["superglue"])
    assert row["t1"] == 90.0
    assert seeds.loc[seeds["seed"] == 0, "superglue"].tolist() == [70.0, 85.0]


def test_default_tasks_are_the_eight_superglue_tasks():
    tasks = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
    frame = runs_frame([(100, 0, t, 10.0 * (i + 1), "finished") for i, t in enumerate(tasks)])
    out = superglue_frame(frame, "prompt_len")
    assert out.loc[0, "mean"] == pytest.approx(45.0) and out.loc[0, "n_seeds"] == 1
    assert pd.isna(out.loc[0, "std"])  # one seed: no spread
    with pytest.warns(CollectWarning, match="missing wsc"):
        out = superglue_frame(frame[frame["task"] != "wsc"], "prompt_len")
    assert pd.isna(out.loc[0, "mean"]) and out.loc[0, "n_incomplete"] == 1


def test_superglue_refuses_to_mix_settings_and_panel_runs_selects():
    mixed = pd.concat([HAND, HAND.assign(init="random_uniform", score=HAND["score"] - 10)])
    with pytest.raises(ValueError, match=r"differ in \['init'\].*panel_runs"):
        superglue_frame(mixed, "prompt_len", tasks=["t1", "t2"])
    # the prompt-length panel holds init at the paper's class_label; the init panel keeps both
    assert set(panel_runs(mixed, "prompt_len")["init"]) == {"class_label"}
    init_panel = panel_runs(mixed, "init")
    assert set(init_panel["prompt_len"]) == {100} and set(init_panel["init"]) == {
        "class_label",
        "random_uniform",
    }
    with pytest.warns(CollectWarning):
        out = superglue_frame(init_panel, "init", tasks=["t1", "t2"])
    assert out.set_index("init")["mean"].to_dict() == pytest.approx(
        {"class_label": 87.5, "random_uniform": 77.5}
    )
    with pytest.raises(KeyError, match="'nope'"):
        superglue_frame(HAND, "nope")


def test_panel_runs_objective_keeps_lm_adapt_at_100k():
    frame = pd.DataFrame(
        {
            "objective": ["span_corruption", "lm_adapt", "lm_adapt"],
            "lm_adapt_steps": pd.array([None, 10000, 100000], dtype="Int64"),
            "prompt_len": 100,
        }
    )
    sel = panel_runs(frame, "objective")
    assert list(sel["objective"]) == ["span_corruption", "lm_adapt"]
    assert sel["lm_adapt_steps"].iloc[1] == 100000
    # Figure 3(d): the span-corruption run is its 0-step point (T5.1.1 itself)
    assert list(panel_runs(frame, "lm_adapt_steps")["lm_adapt_steps"]) == [0, 10000, 100000]


def test_span_corruption_runs_are_figure_3d_step_zero_only_beside_a_step_sweep():
    """fig3_all.yaml trains the 0-step point once, as panel (c)'s span_corruption run; a frame
    of panel (c) alone (LM-adapted at one step count) draws no panel (d) from it."""
    runs = runs_frame([(100, s, "t1", 60.0 + s, "finished") for s in (0, 1)])
    span = runs.assign(objective="span_corruption", lm_adapt_steps=100000)
    sentinel = runs.assign(objective="span_corruption_sentinel", lm_adapt_steps=100000, score=1.0)
    adapted = [
        runs.assign(objective="lm_adapt", lm_adapt_steps=n, score=90.0) for n in (10000, 100000)
    ]
    zero = runs.assign(objective="lm_adapt", lm_adapt_steps=0, score=[62.0, 61.0])

    sel = panel_runs(pd.concat([span, sentinel, *adapted]), "lm_adapt_steps")
    points = superglue_frame(sel, "lm_adapt_steps", tasks=["t1"])
    assert list(points["lm_adapt_steps"]) == [0, 10000, 100000]
    assert points["mean"].iloc[0] == 60.5  # the span-corruption scores, not the sentinel's
    # beside a 0-step run of the same seed, the two are averaged as repeated runs
    both = panel_runs(pd.concat([span, zero, *adapted]), "lm_adapt_steps")
    seeds = superglue_scores(both, "lm_adapt_steps", tasks=["t1"])
    assert list(seeds[seeds["lm_adapt_steps"] == 0]["superglue"]) == [61.0, 61.0]
    # panel (c) alone: no step sweep, nothing relabelled
    alone = panel_runs(pd.concat([span, sentinel, adapted[1]]), "lm_adapt_steps")
    assert set(alone["objective"]) == {"lm_adapt"} and set(alone["lm_adapt_steps"]) == {100000}


def test_panel_runs_holds_each_size_at_its_own_lm_adapted_checkpoint():
    """T5 sizes at 100K (Google's releases), toy sizes at their shipped 500 steps."""
    frame = pd.DataFrame(
        {
            "size": ["base", "base", "toy_small", "toy_small", "toy_small"],
            "objective": "lm_adapt",
            "lm_adapt_steps": pd.array([10000, 100000, 50, 500, 100000], dtype="Int64"),
            "prompt_len": [100, 100, 100, 100, 5],
        }
    )
    sel = panel_runs(frame, "prompt_len")
    assert list(zip(sel["size"], sel["lm_adapt_steps"], strict=True)) == [
        ("base", 100000),
        ("toy_small", 500),
    ]
    assert list(panel_runs(frame, "objective")["lm_adapt_steps"]) == [100000, 500]


# ----------------------------------------------------------------------------- LM-adaptation recipe


def test_lm_adapt_source_column_recorded_resolved_or_inferred(tmp_path):
    """Recorded in result.json; else resolved from config.yaml's choice; else read from the
    recorded checkpoint of an older result.json; else NA."""
    old = result()  # a result.json from before lm_adapt_source
    runs = {
        "recorded": result(lm_adapt_source="own", checkpoint="google/t5-base-lm-adapt"),
        "old_release": {**old, "checkpoint": "google/t5-base-lm-adapt"},
        "old_own": {**old, "lm_adapt_steps": 10000, "checkpoint": "/c/lm_adapt/base/step_10000"},
        "old_toy": {**old, "checkpoint": "/repro/toy_models/toy_small/step_500"},
        "old_t5_1_1": {**old, "lm_adapt_steps": 0, "checkpoint": "google/t5-v1_1-base"},
        "old_span": {**old, "objective": "span_corruption", "lm_adapt_steps": None},
        "old_unknown": {**old, "checkpoint": "/somewhere/tiny-t5"},
        "old_no_checkpoint": old,
    }
    for name, res in runs.items():
        write_run(tmp_path / name, res)
    model = "model: {size: base, path: null, checkpoints: {lm_adapt: google/t5-base-lm-adapt}}\n"
    for name, choice, steps in (("cfg_auto", "auto", 100000), ("cfg_own", "own", 100000)):
        write_run(
            tmp_path / name,
            config=f"{model}objective: {{name: lm_adapt}}\n"
            f"lm_adapt_steps: {steps}\nlm_adapt_source: {choice}\n",
        )
    write_run(
        tmp_path / "cfg_own_0",
        config=f"{model}objective: {{name: lm_adapt}}\nlm_adapt_steps: 0\nlm_adapt_source: own\n",
    )
    df = collect_runs([tmp_path])
    got = {Path(d).name: s for d, s in zip(df["run_dir"], df["lm_adapt_source"], strict=True)}
    assert got == {
        "recorded": "own",
        "old_release": "released",
        "old_own": "own",
        "old_toy": "own",
        "old_t5_1_1": "none",
        "old_span": "none",
        "old_unknown": None,
        "old_no_checkpoint": None,
        "cfg_auto": "released",
        "cfg_own": "own",
        "cfg_own_0": "none",
    }
    assert list(df.columns[: len(AXES)]) == list(AXES) and "_checkpoint" not in df.columns


def test_collect_wandb_reads_the_recipe_from_summary_config_or_checkpoint():
    config = {"size": "base", "objective": "lm_adapt", "lm_adapt_steps": 100000, "seed": 0}
    api = FakeApi(
        [
            fake_run("a", {**config, "lm_adapt_source": "own"}, result(lm_adapt_source="own")),
            fake_run("b", {**config, "lm_adapt_source": "released"}, {}, state="running"),
            fake_run("c", config, result(checkpoint="google/t5-base-lm-adapt")),
            fake_run("d", config, result()),
        ]
    )
    wb = collect_wandb("ent/proj", api=api)
    assert list(wb["lm_adapt_source"]) == ["own", "released", "released", None]


def recipe_runs():
    """Figure 3(d) runs of one size on two tasks, 2 seeds: 0 (none), 10K (own), 100K released
    and 100K own (an `lm_adapt_source=own` sweep in the same frame), own scoring 10 lower."""
    rows = []
    points = [(0, "none", 50.0), (10000, "own", 60.0), (100000, "released", 80.0)]
    points.append((100000, "own", 70.0))
    for steps, source, base in points:
        for seed in (0, 1):
            for task in ("t1", "t2"):
                rows.append(
                    {
                        "size": "small",
                        "params": 76961152,
                        "objective": "lm_adapt",
                        "lm_adapt_steps": steps,
                        "lm_adapt_source": source,
                        "prompt_len": 100,
                        "init": "class_label",
                        "task": task,
                        "seed": seed,
                        "score": base + seed,
                        "status": "finished",
                    }
                )
    return pd.DataFrame(rows)


def test_figure_3d_never_averages_two_recipes_at_one_step_count():
    runs = recipe_runs()
    out = superglue_frame(panel_runs(runs, "lm_adapt_steps"), "lm_adapt_steps", tasks=["t1", "t2"])
    assert list(out.columns[:4]) == ["size", "params", "lm_adapt_steps", "lm_adapt_source"]
    means = {(s, src): m for s, src, m in out[["lm_adapt_steps", "lm_adapt_source", "mean"]].values}
    assert means == pytest.approx(
        {(0, "none"): 50.5, (10000, "own"): 60.5, (100000, "released"): 80.5, (100000, "own"): 70.5}
    )


def test_other_panels_hold_the_released_recipe_where_a_frame_mixes_two():
    runs = recipe_runs()
    runs = pd.concat([runs, runs.assign(prompt_len=1, score=runs["score"] - 40)])
    sel = panel_runs(runs, "prompt_len")
    assert set(zip(sel["lm_adapt_steps"], sel["lm_adapt_source"], strict=True)) == {
        (100000, "released")
    }
    out = superglue_frame(sel, "prompt_len", tasks=["t1", "t2"])
    assert out.set_index("prompt_len")["mean"].to_dict() == pytest.approx({1: 40.5, 100: 80.5})
    # the objective panel: span corruption (none) stays beside the released LM-adapted runs
    span = runs.assign(objective="span_corruption", lm_adapt_steps=None, lm_adapt_source="none")
    sel = panel_runs(pd.concat([runs, span]), "objective")
    assert set(zip(sel["objective"], sel["lm_adapt_source"], strict=True)) == {
        ("span_corruption", "none"),
        ("lm_adapt", "released"),
    }
    # without a released run to prefer, a point mixing two recipes is refused, not averaged
    at_100k = recipe_runs().query("lm_adapt_steps == 100000")
    own = at_100k["lm_adapt_source"] == "own"
    mixed = pd.concat([at_100k[own], at_100k[~own].assign(lm_adapt_source=None)])
    with pytest.raises(ValueError, match=r"differ in \['lm_adapt_source'\]"):
        superglue_frame(panel_runs(mixed, "prompt_len"), "prompt_len", tasks=["t1", "t2"])


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_csv_and_prints_summary(sweep, tmp_path, capsys):
    out = tmp_path / "results" / "x.csv"
    with pytest.warns(CollectWarning):
        assert main([str(sweep), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"7 runs -> {out}" in printed and "finished: 3" in printed and "corrupt: 1" in printed
    back = load_frame(out)
    assert len(back) == 7 and back["params"].dtype == "Int64"
    with pytest.raises(SystemExit):
        main([str(sweep), "-o", str(tmp_path / "x.txt")])


def test_task_list_matches_the_task_registry():
    from repro.collect.superglue import SUPERGLUE_TASKS
    from repro.tasks import SUPERGLUE

    assert SUPERGLUE_TASKS == SUPERGLUE


# --- CLI refusals: one `error:` line, exit 2, the output file as it was ----------------------


def test_cli_refuses_a_missing_directory(tmp_path, capsys):
    from tests.test_bad_input import assert_one_error

    out = tmp_path / "x.csv"
    code = main([str(tmp_path / "nope"), "-o", str(out)])
    assert_one_error(
        code,
        capsys.readouterr().err,
        f"no such run, runs or sweep directory: {tmp_path / 'nope'}",
        "give a sweep dir (multirun/<sweep_name>), runs/ or a run dir",
    )
    assert not out.exists()


def test_cli_never_replaces_a_frame_with_an_empty_one(sweep, tmp_path, capsys):
    from tests.test_bad_input import assert_one_error

    out = tmp_path / "x.csv"
    with pytest.warns(CollectWarning):
        assert main([str(sweep), "-o", str(out)]) == 0
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    capsys.readouterr()
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # directories, but no run in them
    code = main([str(empty), "-o", str(out), "--overwrite"])
    assert_one_error(
        code,
        capsys.readouterr().err,
        f"no run found in {empty} (a run dir holds result.json",
        f"{out} left as it is",
    )
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    new = tmp_path / "new.csv"
    code = main([str(empty), "-o", str(new)])
    assert_one_error(code, capsys.readouterr().err, f"{new} not written")
    assert not new.exists()


@pytest.mark.parametrize("where", ["below a file", "a directory"])
def test_cli_refuses_an_output_it_cannot_write(sweep, tmp_path, capsys, where):
    from tests.test_bad_input import assert_one_error

    taken = tmp_path / "taken.csv"
    if where == "below a file":
        taken.write_text("not a directory")
        out, why = taken / "x.csv", f"{taken}: Not a directory"
    else:
        taken.mkdir()
        out, why = taken, "Is a directory"
    with pytest.warns(CollectWarning):
        code = main([str(sweep), "-o", str(out), "--overwrite"])
    assert_one_error(
        code,
        capsys.readouterr().err,
        f"cannot write {out}: {why}; give -o a writable .csv or .parquet path",
    )
    assert not list(tmp_path.rglob("*.tmp"))


def test_cli_failed_write_leaves_the_old_frame(sweep, tmp_path, capsys, monkeypatch):
    import errno

    from tests.test_bad_input import assert_one_error

    out = tmp_path / "x.csv"
    out.write_text("size,status\nbase,finished\n")

    def full_disk(self, path, **kwargs):
        Path(path).write_text("size,sta")  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.warns(CollectWarning):
        code = main([str(sweep), "-o", str(out), "--overwrite"])
    assert_one_error(code, capsys.readouterr().err, f"cannot write {out}: No space left on device")
    assert out.read_text() == "size,status\nbase,finished\n"
    assert not list(tmp_path.rglob("*.tmp"))
