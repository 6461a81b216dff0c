"""task=superglue end to end on tiny local files of all 8 tasks: one prompt per task, one score."""

import json
import random

import pytest
from hydra import compose, initialize_config_dir
from test_run import CONF
from test_wandb import OfflineApi, read_offline_run, wandb_env  # noqa: F401  (wandb_env is a fixture)

from repro.collect.frame import AXES
from repro.collect.rundirs import collect_runs
from repro.collect.wandb_runs import collect_wandb
from repro.job.experiment import run_experiment
from repro.resolve import load_config
from repro.tasks import SUPERGLUE, superglue_score

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "big", "small", "red", "house", "tree"]


def sentence(rng, n=5):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def record(name, rng, i):
    """One hub-schema record of task ``name`` (the schema of aps/super_glue)."""
    if name == "boolq":
        return {"question": sentence(rng), "passage": sentence(rng), "idx": i, "label": i % 2}
    if name in ("cb", "rte"):
        return {"premise": sentence(rng), "hypothesis": sentence(rng), "idx": i, "label": i % 2}
    if name == "copa":
        return {
            "premise": sentence(rng),
            "choice1": sentence(rng),
            "choice2": sentence(rng),
            "question": ("cause", "effect")[i % 2],
            "idx": i,
            "label": i % 2,
        }
    if name == "multirc":
        return {
            "paragraph": f"<b>Sent 1: </b>{sentence(rng)}<br>",
            "question": sentence(rng),
            "answer": rng.choice(WORDS),
            "idx": {"paragraph": i // 4, "question": i // 2, "answer": i},
            "label": i % 2,
        }
    if name == "record":
        entities = rng.sample(["Tom", "Ann", "Rome", "Paris"], 3)
        return {
            "passage": f"{sentence(rng)}\n@highlight\n{entities[0]} ran",
            "query": "@placeholder sat on the mat.",
            "entities": entities,
            "answers": [entities[0]],
            "idx": {"passage": i, "query": i},
        }
    if name == "wic":
        return {
            "word": "cat",
            "sentence1": "The cat sat.",
            "sentence2": "A cat ran.",
            "start1": 4,
            "end1": 7,
            "start2": 2,
            "end2": 5,
            "idx": i,
            "label": i % 2,
        }
    if name == "wsc":
        return {
            "text": "The cat sat on the mat because it was tired .",
            "span1_index": 0,
            "span2_index": 7,
            "span1_text": "The cat",
            "span2_text": "it",
            "idx": i,
            "label": 1 if i % 3 else 0,
        }
    raise AssertionError(name)


# Multi-metric tasks average their metrics into the task score (PAPER.md, SuperGLUE score).
PAPER_TASK_METRICS = {
    "cb": ("f1_macro", "accuracy"),
    "multirc": ("f1a", "exact_match"),
    "record": ("f1", "exact_match"),
}
# Every target string the records above can have, per task.
TASK_TARGETS = {
    "boolq": ("False", "True"),
    "cb": ("entailment", "contradiction"),
    "rte": ("entailment", "not_entailment"),
    "wsc": ("The cat",),
    "record": ("Tom", "Ann", "Rome", "Paris"),
}


def tiny_job_config(tmp_path, tiny_t5_dir, *overrides):
    """The real config on the session's tiny model: batch 4, no progress bar, a temp cache."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return load_config(
            compose(
                config_name="config",
                overrides=[
                    "model=tiny",
                    f"model.path={tiny_t5_dir}",
                    "trainer.batch_size=4",
                    "trainer.progress=false",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    *overrides,
                ],
            )
        )


@pytest.fixture
def superglue_dir(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "superglue"
    for name in SUPERGLUE:
        (root / name).mkdir(parents=True)
        for split, n in (("train", 8), ("validation", 6)):
            rows = [record(name, rng, i) for i in range(n)]
            (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.usefixtures("wandb_env")
@pytest.mark.parametrize(("eval_mode", "logger"), [("generate", "none"), ("rank", "wandb")])
def test_superglue_job_trains_eight_prompts_and_scores_them(
    tmp_path, tiny_t5_dir, tokenizer, superglue_dir, eval_mode, logger
):
    cfg = tiny_job_config(
        tmp_path,
        tiny_t5_dir,
        "task=superglue",
        f"task.data_dir={superglue_dir}",
        f"task.eval_mode={eval_mode}",
        "prompt_len=3",
        f"logger={logger}",
        *(["logger.mode=offline", "logger.project=repro-test"] * (logger == "wandb")),
        "trainer.steps=2",
        "trainer.eval_every=2",
    )
    run_dir = tmp_path / "job"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "finished", summary
    assert sorted(summary["scores"]) == sorted(SUPERGLUE)

    per_task = {}
    for name in SUPERGLUE:
        result = json.loads((run_dir / name / "result.json").read_text())
        assert result["status"] == "finished" and result["task"] == name
        # The task score is the paper's: the mean of the task's metrics (PAPER.md), here written
        # out independently of Task.metric_names, and it is the best eval line's score.
        averaged = PAPER_TASK_METRICS.get(name, ("accuracy",))
        assert set(averaged) <= set(result["metrics"])
        expected = sum(result["metrics"][m] for m in averaged) / len(averaged)
        assert result["score"] == pytest.approx(expected)
        evals = [json.loads(x) for x in (run_dir / name / "metrics.jsonl").read_text().splitlines()]
        evals = [e for e in evals if e["kind"] == "eval"]
        assert result["score"] == pytest.approx(max(e["score"] for e in evals))
        assert (run_dir / name / "best" / "prompt.safetensors").exists()
        # Each task keeps its own target limit, sized from its data: every gold fits.
        golds = TASK_TARGETS.get(name)
        if golds:
            longest = max(len(tokenizer(g, add_special_tokens=False).input_ids) for g in golds)
            assert result["max_target_length"] == longest + 1, name
        assert result["max_target_length_source"] == "data"
        assert result["eval_golds_over_target_limit"] == 0
        per_task[name] = result["score"]
    assert json.loads((run_dir / "wsc" / "result.json").read_text())["n_train"] == 5  # True only
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["superglue_score"] == pytest.approx(sum(per_task.values()) / 8)
    assert saved["superglue_score"] == pytest.approx(superglue_score(per_task))

    if logger == "wandb":  # the W&B frame has the same 8 task rows as the local one
        local = collect_runs([run_dir]).sort_values("task", ignore_index=True)
        logged = collect_wandb("offline/repro-test", api=OfflineApi(run_dir))
        logged = logged.sort_values("task", ignore_index=True)
        assert list(logged["task"]) == sorted(SUPERGLUE)
        # each task's curves under its own name, each with its own step axis
        (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
        history = read_offline_run(offline).history
        for name in SUPERGLUE:
            evals = [r for r in history if f"{name}/eval/score" in r]
            assert [r[f"{name}/eval/step"] for r in evals] == [2], name
        cols = [*[a for a in AXES if a != "params"], "status", "score"]
        assert logged[cols].astype(str).values.tolist() == local[cols].astype(str).values.tolist()


@pytest.mark.parametrize("max_target_length", [None, 3])
def test_record_target_limit_fits_long_entities_or_counts_those_cut(
    tmp_path, tiny_t5_dir, tokenizer, caplog, max_target_length
):
    """A ReCoRD entity of many pieces: sized from the data it fits (and the generation cap with
    it); a shorter task.max_target_length is warned about and the golds it cuts are counted."""
    long_entity = "Constantinople Metropolitan Cathedral of Saint Sophia"
    pieces = len(tokenizer(long_entity, add_special_tokens=False).input_ids)
    assert pieces + 1 > 8  # the old fixed limit could never have produced it
    rng = random.Random(1)
    root = tmp_path / "record"
    root.mkdir()
    for split in ("train", "validation"):
        rows = []
        for i in range(6):
            row = record("record", rng, i)
            if i % 2:
                row["entities"] = [*row["entities"], long_entity]
                row["answers"] = [long_entity]
            rows.append(row)
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"task.max_target_length={max_target_length}"] if max_target_length else []
    cfg = tiny_job_config(
        tmp_path,
        tiny_t5_dir,
        "task=record",
        f"task.data_dir={root}",
        "prompt_len=2",
        "trainer.steps=1",
        *overrides,
    )
    with caplog.at_level("WARNING", logger="repro.run"):
        assert run_experiment(cfg, tmp_path / "job")["status"] == "finished"
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert result["eval_golds"] == 6
    if max_target_length is None:
        assert result["max_target_length"] == pieces + 1
        assert result["max_target_length_source"] == "data"
        assert result["eval_golds_over_target_limit"] == 0
        assert result["truncated"]["train_targets"] == 0
        assert "can never be produced" not in caplog.text
    else:
        assert result["max_target_length"] == 3
        over = result["eval_golds_over_target_limit"]
        assert over >= 3  # the 3 long entities at least
        assert f"{over} of 6 eval gold targets are longer than task.max_target_length=3" in (
            caplog.text
        )
