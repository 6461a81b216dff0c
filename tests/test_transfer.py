"""Zero-shot transfer (Tables 1-2) on small data in the QQP/MRPC and SQuAD/MRQA schemas: label
words mapped by class id, MRQA scored per out-of-domain set, the frame's eval_task column, the
table builder beside the paper's values (both methods' rows, a warning for a row that matches
nothing), and a method plugging its own scorer in. SQuAD/MRQA inputs as T5 writes them: its
_pad_punctuation on documented examples, and against RE2 itself (the engine of TF's
regex_replace, through google-re2) where that installs."""

import json
import random

import pandas as pd
import pytest
import torch
from conftest import train_smoke_runs

from repro import trained
from repro.collect.rundirs import collect_runs
from repro.collect.superglue import superglue_scores
from repro.tables import TablesWarning, markdown, transfer_table
from repro.tasks import get_task
from repro.tasks.transfer import first_question_per_context, pad_punctuation, string_join
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
    subsets = ("TextbookQA", "BioASQ", "RACE", "DuoRC.ParaphraseRC")
    mrqa = []
    for i, q in enumerate(qa(i) for i in range(24)):
        row = {"qid": str(i), "question": q["question"], "context": q["context"]}
        mrqa.append(row | {"answers": [q["answer"]], "subset": subsets[i % 4]})
        if i % 3 == 0:  # a second question on the context: not in the official TSV
            mrqa.append({**mrqa[-1], "qid": f"{i}b", "question": "and the first word?"})
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
            # Table 1's other column: model tuning, its recipe's defaults (conf/method/model)
            "squad-model-s0": ["task=squad", f"task.data_dir={data / 'squad'}", "method=model"],
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
def test_squad_to_mrqa_gives_f1_per_set_as_rows_and_both_columns_of_table_1(runs, data, capsys):
    """Prompt tuning (2 seeds) and model tuning (1) on SQuAD, each scored on MRQA: one row per
    (method, set), the two methods of a set adjacent, the paper's value beside each (DuoRC under
    MRQA's own name), and the paper's sets this data lacks named in one warning."""
    squad = [str(runs[n]) for n in ("squad-s0", "squad-s1", "squad-model-s0")]
    code = main([*squad, "--to", "mrqa", "--data-dir", f"mrqa={data / 'mrqa'}"])
    assert code == 0, capsys.readouterr().err
    # 32 hub rows, 24 contexts: the official path keeps each context's first question
    result = json.loads((runs["squad-s0"] / "transfer/mrqa/result.json").read_text())
    assert result["n_eval"] == 24
    frame = collect_runs(squad)
    assert sorted(frame["eval_task"]) == ["mrqa"] * 3 + ["squad"] * 3
    assert set(frame["method"]) == {"prompt", "model"}
    assert frame.loc[frame["eval_task"] == "mrqa", "metric/f1/BioASQ"].notna().all()
    # transfer rows never enter a SuperGLUE-style point: one score per seed, the run's own
    prompt = frame[frame["method"] == "prompt"]
    points = superglue_scores(prompt, None, tasks=["squad"])
    own = prompt[prompt["eval_task"] == "squad"]["score"]
    assert sorted(points["squad"]) == sorted(own)

    with pytest.warns(TablesWarning) as caught:
        table = transfer_table(frame)
    said = " ".join(str(w.message) for w in caught)
    assert "4 paper row(s) that match no measured row" in said
    assert "squad → mrqa RelationExtraction f1 (model)" in said and "DROP f1 (prompt)" in said
    assert "DuoRC" not in said and "no paper row" not in said  # exact match: not in the paper
    sets = table[table["eval_task"] == "mrqa"]
    assert sorted(set(sets["eval_set"])) == [
        "BioASQ",
        "DuoRC.ParaphraseRC",
        "RACE",
        "TextbookQA",
    ]
    assert set(sets["metric"]) == {"f1", "exact_match"}
    f1 = sets[sets["metric"] == "f1"].set_index(["eval_set", "method"])
    assert f1["n"].to_dict()[("BioASQ", "prompt")] == 2 and f1.loc[("BioASQ", "model"), "n"] == 1
    assert f1.loc[("TextbookQA", "prompt"), "paper"] == 66.8  # the paper's beside ours
    assert f1.loc[("DuoRC.ParaphraseRC", "model"), "paper"] == 68.9
    assert f1.loc[("DuoRC.ParaphraseRC", "prompt"), "paper"] == 67.7
    bioasq = frame.loc[frame["method"] == "prompt", "metric/f1/BioASQ"]
    assert f1.loc[("BioASQ", "prompt"), "mean"] == pytest.approx(pd.to_numeric(bioasq).mean())
    lines = markdown(table).splitlines()
    race = "| squad → mrqa | RACE | model | f1 |"
    model = next(i for i, x in enumerate(lines) if x.startswith(race))
    assert lines[model + 1].startswith("| squad → mrqa | RACE | prompt | f1 |")
    assert any(x.startswith("| squad → squad | squad | model | f1 |") for x in lines)  # in-domain
    assert any("| 66.8 ± 2.9 † |" in x for x in lines)


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


# --- SQuAD / MRQA as T5 writes them --------------------------------------------------------

# T5's _pad_punctuation (t5 <= 0.9.3, the releases of the paper's time): TF's regex_replace,
# i.e. RE2 in UTF-8 mode, of these patterns by these rewrites, in this order.
T5_PAD = (r"(\W)", r" \1 ")
T5_SPACES = (r"\s+", " ")
# The first SQuAD v1.1 dev paragraph, cut short, and its first question and answers.
SQUAD_DEV_0 = {
    "id": "56be4db0acb8001400a502ec",
    "question": "Which NFL team represented the AFC at Super Bowl 50?",
    "context": (
        "The American Football Conference (AFC) champion Denver Broncos defeated the National "
        "Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super "
        "Bowl title. The game was played on February 7, 2016, at Levi's Stadium in the San "
        "Francisco Bay Area at Santa Clara, California."
    ),
    "answers": {"text": ["Denver Broncos", "Denver Broncos"], "answer_start": [177, 177]},
}
TRICKY = [
    "Saint-Denis",
    "don't",
    "François",  # multilingual-t5's docstring: T5's squad() makes it "Fran ç ois"
    "24–10",
    "Levi's Stadium",
    "x_y = 1,000.5%",
    "“quoted” — ‘this’…",
    "no\u00a0break and\x0bvertical tab",
    "tabs\tand\n\nnewlines  ",
    "(AFC)",
    "ß ñ Ω 中文 😀",
]


@pytest.mark.parametrize(
    "text, padded",
    [
        ("Saint-Denis", "Saint - Denis"),  # one token for F1 raw, two padded
        ("don't", "don ' t"),
        ("François", "Fran ç ois"),  # RE2's \W is ASCII: every other letter is padded
        ("24–10", "24 – 10"),
        ("x_y 1,000", "x_y 1 , 000"),  # _ is a word character
        ("What?", "What ? "),  # padded, never stripped (SentencePiece drops the space)
        ("a\u00a0b", "a \u00a0 b"),  # RE2's \s is ASCII: a no-break space stays, padded
        ("a \t\n b", "a b"),
    ],
)
def test_pad_punctuation_as_t5_on_documented_cases(text, padded):
    assert pad_punctuation(text) == padded


def test_a_squad_record_becomes_t5s_example():
    (ex,) = get_task("squad").format([SQUAD_DEV_0], train=True)
    assert ex.inputs == (
        "question: Which NFL team represented the AFC at Super Bowl 50 ? context: The American "
        "Football Conference ( AFC ) champion Denver Broncos defeated the National Football "
        "Conference ( NFC ) champion Carolina Panthers 24 – 10 to earn their third Super Bowl "
        "title . The game was played on February 7 , 2016 , at Levi ' s Stadium in the San "
        "Francisco Bay Area at Santa Clara , California . "
    )
    assert ex.targets == "Denver Broncos" and ex.meta["answers"] == ("Denver Broncos",) * 2
    hyphen = {**SQUAD_DEV_0, "answers": {"text": ["Saint-Denis"], "answer_start": [0]}}
    (ex,) = get_task("squad").format([hyphen], train=False)
    assert ex.targets == "Saint - Denis"
    # token F1 on the padded text: the padded answer is two tokens, so a padded prediction of
    # one of them scores F1 2/3, where against the raw one-token gold it scored 0
    assert get_task("squad").score(["Saint"], [ex])["f1"] == pytest.approx(200 / 3)


def test_pad_punctuation_against_re2_the_engine_of_t5s_regex_replace(data):
    """T5's two substitutions run through RE2 itself (google-re2: the library behind
    tf.strings.regex_replace) give our strings, for tricky text and every fixture record."""
    re2 = pytest.importorskip("re2")

    def t5_pad(text):
        return re2.sub(T5_SPACES[0], T5_SPACES[1], re2.sub(T5_PAD[0], T5_PAD[1], text))

    def t5_squad(x):  # T5's preprocessors.squad, include_context=True
        a = [t5_pad(t) for t in x["answers"]["text"]]
        q, c = t5_pad(x["question"]), t5_pad(x["context"])
        inputs = re2.sub(T5_SPACES[0], " ", " ".join(["question:", q, "context:", c]))
        return inputs, a[0], tuple(a)

    for text in TRICKY:
        assert pad_punctuation(text) == t5_pad(text), text
        assert string_join(["question:", text]) == re2.sub(r"\s+", " ", f"question: {text}")
    records = [SQUAD_DEV_0, *(json.loads(x) for x in (data / "squad/train.jsonl").open())]
    records.append({**SQUAD_DEV_0, "question": " ".join(TRICKY), "answers": {"text": TRICKY}})
    for record, ex in zip(records, get_task("squad").format(records, train=True), strict=True):
        assert (ex.inputs, ex.targets, ex.meta["answers"]) == t5_squad(record)


def test_mrqa_as_the_official_tsv_path_reads_it():
    """mrqa_to_tsv.py keeps each context's first question, its first detected answer as the
    target and its answers for scoring, whitespace runs as one space; the TSV hands back a
    field holding a double quote quoted, inner quotes doubled; then all padded as SQuAD."""
    context = 'He said "go"\n\nand  left.'
    rows = [
        {"qid": "q1", "subset": "DuoRC.ParaphraseRC", "context": context, "question": "Who\tleft?"}
        | {"answers": ["he", '"he"'], "detected_answers": {"text": ["He"], "char_spans": []}},
        {"qid": "q2", "subset": "DuoRC.ParaphraseRC", "context": context, "question": "What?"}
        | {"answers": ["go"], "detected_answers": {"text": ["go"], "char_spans": []}},
        {"qid": "q3", "subset": "DROP", "context": context, "question": "Again?"}
        | {"answers": ["left"]},
    ]
    mrqa = get_task("mrqa")
    assert [r["qid"] for r in first_question_per_context(mrqa, rows)] == ["q1", "q3"]
    first, third = mrqa.format(first_question_per_context(mrqa, rows), train=False)
    assert first.inputs == ('question: Who left ? context: " He said " " go " " and left . " ')
    assert first.targets == "He"  # the detected span, not answers[0]
    assert first.meta["answers"] == (' " he', ' " " he " " " ')  # '"he|||""he"""' split
    assert first.meta["subset"] == "DuoRC.ParaphraseRC" and first.meta["idx"] == "q1"
    assert third.targets == "left"  # no detected answer: the first answer
    assert mrqa.score(["he"], [first])["f1"] == 100.0  # the quotes are punctuation to F1


def _table1_frame(sets, methods=("prompt",)):
    rows = []
    for method in methods:
        own = {"task": "squad", "eval_task": "squad", "metric/f1": 90.0}
        mrqa = {"task": "squad", "eval_task": "mrqa"} | {f"metric/f1/{s}": 50.0 for s in sets}
        for row in (own, mrqa):
            rows.append(row | {"method": method, "seed": 0, "status": "finished"})
    return pd.DataFrame(rows)


def test_tables_warns_of_paper_rows_and_measured_rows_that_do_not_meet(tmp_path, capsys):
    import warnings

    from repro.tables import PAPER_TRANSFER
    from repro.tables import main as tables

    sets = ["TextbookQA", "BioASQ", "RACE", "RelationExtraction", "DuoRC.ParaphraseRC", "DROP"]
    with warnings.catch_warnings():  # both methods, every set: nothing to say
        warnings.simplefilter("error")
        table = transfer_table(_table1_frame(sets, ("prompt", "model")))
    assert table["paper"].notna().all() and len(table) == 14
    assert list(table["method"][:2]) == ["model", "prompt"]  # the paper's two columns, adjacent
    # the reference as it was: DuoRC under a name MRQA never used
    old = pd.read_csv(PAPER_TRANSFER).replace("DuoRC.ParaphraseRC", "DuoRC.ParagraphRC")
    with pytest.warns(TablesWarning) as caught:
        transfer_table(_table1_frame(sets), old)
    missing, unreported = (str(w.message) for w in caught)
    assert missing.startswith("8 paper row(s) that match no measured row")
    assert "squad → mrqa DuoRC.ParagraphRC f1 (prompt)" in missing
    assert "squad → squad squad f1 (model)" in missing  # model tuning never trained
    assert unreported.startswith("1 measured row(s) that match no paper row")
    assert unreported.endswith("squad → mrqa DuoRC.ParaphraseRC f1 (prompt)")
    # the command: the table still printed, the warning on stderr
    _table1_frame(["BioASQ"]).to_csv(tmp_path / "frame.csv", index=False)
    assert tables([str(tmp_path / "frame.csv")]) == 0
    out, err = capsys.readouterr()
    assert "| squad → mrqa | BioASQ | prompt | f1 | 50.0 (n=1) | 79.1 ± 0.3 † |" in out
    assert err.startswith("warning: 12 paper row(s) that match no measured row")
    # a toy pair: the paper has no row for it, so nothing is missing
    toy = pd.DataFrame(
        [
            {"task": "toy_review", "eval_task": e, "method": "prompt", "status": "finished"}
            | {"metric/accuracy": 60.0}
            for e in ("toy_review", "toy_polarity")
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(transfer_table(toy)) == 2
