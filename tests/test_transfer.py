"""Zero-shot transfer (Tables 1-2) on small data in the QQP/MRPC and SQuAD/MRQA schemas: label
words mapped by class id, MRQA scored per out-of-domain set, the frame's eval_task column, the
table builder beside the paper's values, and a method plugging its own scorer in."""

import json
import random

import pandas as pd
import pytest
import torch
from conftest import train_smoke_runs

from repro import trained
from repro.collect.rundirs import collect_runs
from repro.collect.superglue import superglue_scores
from repro.tables import markdown, transfer_table
from repro.tasks import get_task
from repro.transfer import TransferError, label_map, main

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "a",
    "mat",
    "in",
    "house",
    "river",
    "tree",
    "went",
    "saw",
    "big",
    "small",
]


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))


def write(directory, split, rows):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """QQP/MRPC/SQuAD/MRQA files in the hub schemas (nyu-mll/glue, rajpurkar/squad, mrqa)."""
    root, rng = tmp_path_factory.mktemp("transfer-data"), random.Random(0)
    pairs = [(sentence(rng), sentence(rng), i % 2, i) for i in range(32)]
    qqp = [{"question1": a, "question2": b, "label": y, "idx": i} for a, b, y, i in pairs]
    mrpc = [{"sentence1": a, "sentence2": b, "label": y, "idx": i} for a, b, y, i in pairs]
    for split in ("train", "validation"):
        write(root / "qqp", split, qqp)
    write(root / "mrpc", "validation", mrpc[:20])

    def qa(i):
        words = [rng.choice(WORDS) for _ in range(8)]
        answer = words[3]
        return {"question": f"what is word {i}?", "context": " ".join(words), "answer": answer}

    squad = [
        {"id": str(i), **{k: v for k, v in q.items() if k != "answer"}}
        | {"answers": {"text": [q["answer"]], "answer_start": [0]}}
        for i, q in enumerate(qa(i) for i in range(24))
    ]
    for split in ("train", "validation"):
        write(root / "squad", split, squad)
    subsets = ("TextbookQA", "BioASQ", "RACE")
    mrqa = [
        {"qid": str(i), "question": q["question"], "context": q["context"]}
        | {"answers": [q["answer"]], "subset": subsets[i % 3]}
        for i, q in enumerate(qa(i) for i in range(18))
    ]
    write(root / "mrqa", "test", mrqa)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_t5_dir, data):
    root = tmp_path_factory.mktemp("transfer-runs")
    return train_smoke_runs(
        root,
        tiny_t5_dir,
        {
            "qqp-s0": ["task=qqp", f"task.data_dir={data / 'qqp'}"],
            "squad-s0": ["task=squad", f"task.data_dir={data / 'squad'}", "init=sampled_vocab"],
            "squad-s1": [
                "task=squad",
                f"task.data_dir={data / 'squad'}",
                "init=sampled_vocab",
                "seed=1",
            ],
        },
    )


def test_label_map_by_class_id_and_what_cannot_be_mapped():
    qqp, mrpc = get_task("qqp"), get_task("mrpc")
    assert label_map(qqp, mrpc) == {"not_duplicate": "not_equivalent", "duplicate": "equivalent"}
    assert label_map(get_task("squad"), get_task("mrqa")) == {}
    with pytest.raises(TransferError, match=r"cannot map the answers of qqp .* onto cb"):
        label_map(qqp, get_task("cb"))
    with pytest.raises(TransferError, match=r"onto squad \(free text\)"):
        label_map(qqp, get_task("squad"))


@pytest.mark.slow
def test_qqp_run_scored_on_mrpc_through_a_plugged_in_scorer_maps_its_words(
    runs, data, tmp_path, monkeypatch, capsys
):
    """Transfer scores with the scorer registered for the run's method in
    repro.trained.SCORERS (the run's config names it): here, in place of the prompt scorer, one
    that always answers QQP's 'duplicate', which on MRPC must count as 'equivalent'."""

    class SaysDuplicate(torch.nn.Module):
        def __init__(self, tokenizer):
            super().__init__()
            self.ids = [0, *tokenizer("duplicate").input_ids]

        def generate(self, input_ids, attention_mask, max_new_tokens):
            return torch.tensor([self.ids] * len(input_ids))

    run_dir = tmp_path / "model-tuned-qqp"
    import shutil

    shutil.copytree(runs["qqp-s0"], run_dir)
    monkeypatch.setitem(trained.SCORERS, "prompt", lambda run, bb: SaysDuplicate(bb.tokenizer))
    code = main([str(run_dir), "--to", "mrpc", "--data-dir", f"mrpc={data / 'mrpc'}"])
    assert code == 0, capsys.readouterr().err
    out = json.loads((run_dir / "transfer/mrpc/result.json").read_text())
    gold = [json.loads(x)["label"] for x in (data / "mrpc/validation.jsonl").open()]
    share = 100 * sum(gold) / len(gold)  # every answer 'equivalent' = class 1
    assert out["metrics"]["accuracy"] == pytest.approx(share)
    assert out["metrics"]["f1"] == pytest.approx(100 * 2 * share / (share + 100))
    assert (out["task"], out["eval_task"], out["method"]) == ("qqp", "mrpc", "prompt")
    assert out["label_map"] == {"not_duplicate": "not_equivalent", "duplicate": "equivalent"}


@pytest.mark.slow
def test_squad_to_mrqa_gives_f1_per_set_as_rows_and_table_1(runs, data, capsys):
    squad = [str(runs["squad-s0"]), str(runs["squad-s1"])]
    code = main([*squad, "--to", "mrqa", "--data-dir", f"mrqa={data / 'mrqa'}"])
    assert code == 0, capsys.readouterr().err
    frame = collect_runs(squad)
    assert list(frame["eval_task"]) == ["squad", "mrqa", "squad", "mrqa"]
    assert frame.loc[frame["eval_task"] == "mrqa", "metric/f1/BioASQ"].notna().all()
    # transfer rows never enter a SuperGLUE-style point: one score per seed, the run's own
    points = superglue_scores(frame, None, tasks=["squad"])
    own = frame[frame["eval_task"] == "squad"]["score"]
    assert sorted(points["squad"]) == sorted(own)

    table = transfer_table(frame)
    sets = table[table["eval_task"] == "mrqa"]
    assert sorted(set(sets["eval_set"])) == ["BioASQ", "RACE", "TextbookQA"]
    assert set(sets["metric"]) == {"f1", "exact_match"} and set(sets["n"]) == {2}
    f1 = sets[sets["metric"] == "f1"].set_index("eval_set")
    assert f1.loc["TextbookQA", "paper"] == 66.8  # the paper's prompt-tuning value beside ours
    assert f1.loc["BioASQ", "mean"] == pytest.approx(
        pd.to_numeric(frame["metric/f1/BioASQ"]).mean()
    )
    text = markdown(table)
    assert "| squad → mrqa | TextbookQA | prompt | f1 |" in text and "66.8 ± 2.9 †" in text
    assert "| squad → squad | squad | prompt | f1 |" in text  # the in-domain row


def test_tables_command_prints_the_table_and_refuses_a_frame_without_transfer_rows(
    tmp_path, capsys
):
    from repro.tables import main as tables

    rows = [
        {"task": "qqp", "eval_task": e, "seed": s, "status": "finished", "metric/accuracy": a}
        | {"metric/f1": f}
        for e, s, a, f in [("qqp", 0, 80, 70), ("mrpc", 0, 70, 80), ("mrpc", 1, 72, 84)]
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "frame.csv", index=False)
    assert tables([str(tmp_path / "frame.csv"), "-o", str(tmp_path / "t.md")]) == 0
    out = capsys.readouterr().out
    assert "| qqp → mrpc | mrpc | prompt | f1 | 82.0 ± 2.8 (n=2) | 84.3 ± 0.3 † |" in out
    assert "| qqp → qqp | qqp | prompt | accuracy | 80.0 (n=1) | — |" in out
    assert (tmp_path / "t.md").read_text() == out
    pd.DataFrame(rows[:1]).to_csv(tmp_path / "own.csv", index=False)
    assert tables([str(tmp_path / "own.csv")]) == 2
    assert "holds no transfer rows" in capsys.readouterr().err
