"""task=superglue end to end on tiny local files of all 8 tasks: one prompt per task, one score."""

import json
import random

import pytest
from hydra import compose, initialize_config_dir
from test_run import CONF
from test_wandb import OfflineApi, read_offline_run, wandb_env  # noqa: F401  (wandb_env is a fixture)

from repro.collect import AXES, collect_runs, collect_wandb
from repro.config import to_config
from repro.metrics import superglue_score
from repro.run import run_experiment
from repro.tasks import SUPERGLUE, get_task

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
    tmp_path, tiny_t5_dir, superglue_dir, eval_mode, logger
):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(
            compose(
                config_name="config",
                overrides=[
                    "model=tiny",
                    f"model.path={tiny_t5_dir}",
                    "task=superglue",
                    f"task.data_dir={superglue_dir}",
                    f"task.eval_mode={eval_mode}",
                    "prompt_len=3",
                    f"logger={logger}",
                    *(["logger.mode=offline", "logger.project=repro-test"] * (logger == "wandb")),
                    "trainer.steps=2",
                    "trainer.eval_every=2",
                    "trainer.batch_size=4",
                    "trainer.progress=false",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                ],
            )
        )
    run_dir = tmp_path / "job"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "finished", summary
    assert sorted(summary["scores"]) == sorted(SUPERGLUE)

    per_task = {}
    for name in SUPERGLUE:
        result = json.loads((run_dir / name / "result.json").read_text())
        assert result["status"] == "finished" and result["task"] == name
        task = get_task(name)
        assert set(task.metric_names) <= set(result["metrics"])
        assert result["score"] == pytest.approx(task.task_score(result["metrics"]))
        assert (run_dir / name / "best" / "prompt.safetensors").exists()
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
