"""Task formats, schema normalisation and local loading, checked on hand-written records."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro.tasks import (
    SUPERGLUE,
    TASKS,
    Example,
    Task,
    get_task,
    map_labels,
    register_task,
    superglue_score,
)
from repro.tasks import task_names as expand_task


def fmt(name: str, record: dict, *, train: bool = False) -> list[tuple[str, str]]:
    return [(ex.inputs, ex.targets) for ex in get_task(name).format([record], train=train)]


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


# ------------------------------------------------------------------- one record per task
def test_boolq_format():
    record = {"question": "is the sky blue", "passage": "Sky -- It is blue.", "idx": 3, "label": 1}
    assert fmt("boolq", record) == [
        ("passage: Sky -- It is blue. question: is the sky blue", "True")
    ]


def test_cb_format():
    record = {"premise": "A dog ran.", "hypothesis": "An animal ran.", "idx": 0, "label": 2}
    assert fmt("cb", record) == [("hypothesis: An animal ran. premise: A dog ran.", "neutral")]


def test_copa_format():
    record = {
        "premise": "The man fell.",
        "choice1": "He slipped.",
        "choice2": "He sang.",
        "question": "cause",
        "idx": 7,
        "label": 0,
    }
    assert fmt("copa", record) == [
        ("choice1: He slipped. choice2: He sang. premise: The man fell. question: cause", "choice1")
    ]


def test_multirc_format_cleans_html():
    record = {
        "paragraph": "<b>Sent 1: </b>Tom ran.<br><b>Sent 2: </b>He won.<br>",
        "question": "Who won?",
        "answer": "Tom",
        "idx": {"paragraph": 0, "question": 4, "answer": 9},
        "label": 1,
    }
    [ex] = get_task("multirc").format([record], train=False)
    assert (
        ex.inputs == "question: Who won? answer: Tom paragraph: Sent 1: Tom ran. Sent 2: He won. "
    )
    assert ex.targets == "True"
    assert ex.meta["group"] == (0, 4)


RECORD_HUB = {
    "passage": "Tom beat Ann in Rome.\n@highlight\nTom wins\n@highlight\nAnn is second.\n@highlight\nEnd",
    "query": "@placeholder won the race.",
    "entities": ["Rome", "Tom", "Ann", "Tom"],
    "answers": ["Tom", "Tom Smith"],
    "idx": {"passage": 5, "query": 11},
}
RECORD_INPUTS = (
    "query: @placeholder won the race. entities: Ann, Rome, Tom "
    "passage: Tom beat Ann in Rome. Tom wins. Ann is second. End"
)


def test_record_one_example_per_answer_in_training():
    assert fmt("record", RECORD_HUB, train=True) == [
        (RECORD_INPUTS, "Tom"),
        (RECORD_INPUTS, "Tom Smith"),
    ]


def test_record_eval_keeps_all_answers_in_one_example():
    [ex] = get_task("record").format([RECORD_HUB], train=False)
    assert (ex.inputs, ex.targets) == (RECORD_INPUTS, "Tom")
    assert ex.meta["answers"] == ("Tom", "Tom Smith")
    assert ex.meta["group"] == (5, 11)


def test_rte_format():
    record = {"premise": "It rained.", "hypothesis": "It was dry.", "idx": 1, "label": 1}
    assert fmt("rte", record) == [("hypothesis: It was dry. premise: It rained.", "not_entailment")]


def test_wic_format_ignores_offsets():
    record = {
        "word": "bank",
        "sentence1": "The river bank.",
        "sentence2": "The bank closed.",
        "start1": 10,
        "end1": 14,
        "start2": 4,
        "end2": 8,
        "idx": 2,
        "label": 0,
    }
    assert fmt("wic", record) == [
        ("sentence1: The river bank. sentence2: The bank closed. word: bank", "False")
    ]


WSC_HUB = {
    "text": "The trophy does not fit in the suitcase because it is too big .",
    "span1_index": 0,
    "span2_index": 9,
    "span1_text": "The trophy",
    "span2_text": "it",
    "idx": 4,
    "label": 1,
}
WSC_INPUTS = "The trophy does not fit in the suitcase because *it* is too big ."


def test_wsc_marks_pronoun_and_targets_referent():
    assert fmt("wsc", WSC_HUB, train=True) == [(WSC_INPUTS, "The trophy")]


def test_wsc_trains_on_true_examples_only_but_evaluates_all():
    false = {**WSC_HUB, "span1_text": "the suitcase", "span1_index": 6, "label": 0}
    wsc = get_task("wsc")
    assert [ex.targets for ex in wsc.format([WSC_HUB, false], train=True)] == ["The trophy"]
    evaluated = wsc.format([WSC_HUB, false], train=False)
    assert [ex.targets for ex in evaluated] == ["The trophy", "the suitcase"]
    assert [ex.meta["label"] for ex in evaluated] == [1, 0]


def test_wsc_pronoun_glued_to_punctuation_and_off_by_one_index():
    glued = {
        **WSC_HUB,
        "text": 'Ann said "Good for him," and left.',
        "span2_index": 4,
        "span2_text": "him",
    }
    assert fmt("wsc", glued)[0][0] == 'Ann said "Good for *him* ," and left.'
    shifted = {**WSC_HUB, "text": "they want to use it , now", "span2_index": 3, "span2_text": "it"}
    assert fmt("wsc", shifted)[0][0] == "they want to use *it* , now"


# Records in the official files' layout that need each of wsc.fixed's span repairs, with the
# (inputs, targets) T5's wsc_simple makes from the repaired records.
WSC_REPAIRS = [
    pytest.param(  # span capitalised, word in the text lower-case (train idx 16)
        "Police arrested the demonstrators because they were violent .",
        {"span1_index": 2, "span1_text": "The demonstrators", "span2_index": 5, "span2_text": "they"},
        ("Police arrested the demonstrators because *they* were violent .", "the demonstrators"),
        id="lower-case",
    ),
    pytest.param(  # span lower-case, word in the text capitalised (train idx 13)
        "The lawyer asked the witness a question , but he was reluctant .",
        {"span1_index": 0, "span1_text": "the lawyer", "span2_index": 8, "span2_text": "he"},
        ("The lawyer asked the witness a question , but *he* was reluctant .", "The lawyer"),
        id="upper-case",
    ),
    pytest.param(  # trailing full stop in the span
        "Sam saw the comet because it was bright .",
        {"span1_index": 2, "span1_text": "the comet.", "span2_index": 5, "span2_text": "it"},
        ("Sam saw the comet because *it* was bright .", "the comet"),
        id="trailing-stop",
    ),
    pytest.param(  # newline inside the span (train idx 234)
        "The willow-towered Canopy Huntertropic wrestles the jungle so it wins .",
        {"span1_index": 1, "span1_text": "willow-towered Canopy\nHuntertropic wrestles",
         "span2_index": 9, "span2_text": "it"},
        ("The willow-towered Canopy Huntertropic wrestles the jungle so *it* wins .",
         "willow-towered Canopy Huntertropic wrestles"),
        id="newline",
    ),
    pytest.param(  # words between the referent's parts: TFDS leaves it as it is
        "Kamenev and later Zinoviev met Stalin , and he left .",
        {"span1_index": 0, "span1_text": "Kamenev and Zinoviev", "span2_index": 8, "span2_text": "he"},
        ("Kamenev and later Zinoviev met Stalin , and *he* left .", "Kamenev and Zinoviev"),
        id="unfixable",
    ),
    pytest.param(  # T5 hard-codes this text (train idx 137): no trailing space, "him" split off
        'The boy continued to whip the pony , and eventually the pony threw him over. John laughed '
        'out quite loud. "Good for him," he said. ',
        {"span1_index": 6, "span1_text": "pony", "span2_index": 22, "span2_text": "him"},
        ('The boy continued to whip the pony , and eventually the pony threw him over. John '
         'laughed out quite loud. "Good for *him* ," he said.', "pony"),
        id="t5-special-137",
    ),
    pytest.param(  # T5 hard-codes this text (validation idx 42): span2_index points at "use"
        "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
        "magic pebble in an iron safe . Some day they might want to use it , but really for now, "
        "what more could they wish for?",
        {"span1_index": 22, "span1_text": "safe", "span2_index": 30, "span2_text": "it"},
        ("When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
         "magic pebble in an iron safe . Some day they might want to use *it* , but really for "
         "now, what more could they wish for?", "safe"),
        id="t5-special-42",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "target", "expected"), WSC_REPAIRS)
def test_wsc_official_files_and_hub_give_t5_wsc_simple_examples(tmp_path, text, target, expected):
    wsc = get_task("wsc")
    dist = {"text": text, "target": target, "idx": 7, "label": True}
    write_jsonl(tmp_path / "dist" / "WSC" / "train.jsonl", [dist])
    # The hub parquet was built by the loading script that already repaired the spans.
    repaired = {"text": text, **target, "span1_text": expected[1], "idx": 7, "label": 1}
    write_parquet(tmp_path / "hub" / "train.parquet", [repaired])
    for source in ("dist", "hub"):
        examples = wsc.examples("train", tmp_path / source)
        assert [(ex.inputs, ex.targets) for ex in examples] == [expected], source
        assert examples[0].meta["referent"] == expected[1]


def test_wsc_span_repairs_leave_spans_found_in_the_text_alone():
    from repro.tasks.superglue import fix_wsc_spans

    record = {**WSC_HUB, "span1_text": "trophy does not"}  # a substring: nothing to repair
    assert fix_wsc_spans(record) == record
    scold = {**WSC_HUB, "span2_text": "theyscold", "span2_index": 3}
    assert fix_wsc_spans(scold)["span2_index"] == 10  # TFDS's one index repair


def test_wsc_marks_every_blank_as_t5_does():
    # T5 blanks the pronoun with "X" and then replaces every " X " in the text.
    record = {**WSC_HUB, "text": "Give X the box because it is X sized .", "span2_index": 5}
    assert fmt("wsc", record)[0][0] == "Give *it* the box because *it* is *it* sized ."


def test_qqp_and_mrpc_formats():
    qqp = {"question1": "How old?", "question2": "What age?", "idx": 0, "label": 1}
    mrpc = {"sentence1": "A b.", "sentence2": "B a.", "idx": 0, "label": 0}
    assert fmt("qqp", qqp) == [("question1: How old? question2: What age?", "duplicate")]
    assert fmt("mrpc", mrpc) == [("sentence1: A b. sentence2: B a.", "not_equivalent")]


def test_sst2_is_the_official_taskless_glue_format(tmp_path):
    # T5's glue() gives "sst2 sentence: ..." with TFDS's label names; the official prompts were
    # trained on its taskless variant, the first word removed.
    record = {"sentence": "it 's a charming journey . ", "idx": 3, "label": 1}
    assert fmt("sst2", record) == [("sentence: it 's a charming journey . ", "positive")]
    sst2 = get_task("sst2")
    assert (sst2.hub_id, sst2.hub_config, sst2.labels) == (
        "nyu-mll/glue",
        "sst2",
        ("negative", "positive"),
    )
    rows = [{**record, "label": 0}, record]
    write_jsonl(tmp_path / "SST-2" / "validation.jsonl", rows)  # a local copy, in a subdir
    examples = sst2.examples("validation", tmp_path)
    assert [ex.targets for ex in examples] == ["negative", "positive"]
    assert sst2.score(["negative", "negative"], examples) == {"accuracy": 50.0}


def test_squad_and_mrqa_formats():
    squad = {
        "id": "q1",
        "title": "T",
        "context": "Paris is in France.",
        "question": "Where is Paris?",
        "answers": {"text": ["France", "in France"], "answer_start": [12, 9]},
    }
    mrqa = {
        "subset": "BioASQ",
        "qid": "x",
        "context": "C.",
        "question": "Q?",
        "answers": ["a", "b"],
    }
    # T5's _pad_punctuation on every text (tests/test_transfer.py checks it against RE2)
    assert fmt("squad", squad) == [
        ("question: Where is Paris ? context: Paris is in France . ", "France")
    ]
    [ex] = get_task("mrqa").format([mrqa], train=False)
    assert (ex.inputs, ex.targets, ex.meta["answers"]) == (
        "question: Q ? context: C . ",
        "a",
        ("a", "b"),
    )


# --------------------------------------------------------------- both on-disk schemas agree
DIST_MULTIRC = {
    "idx": 0,
    "version": 1.1,
    "passage": {
        "text": "<b>Sent 1: </b>Tom ran.<br>",
        "questions": [
            {
                "question": "Who ran?",
                "idx": 0,
                "answers": [
                    {"text": "Tom", "idx": 0, "label": 1},
                    {"text": "Ann", "idx": 1, "label": 0},
                ],
            },
            {
                "question": "Did Tom run?",
                "idx": 1,
                "answers": [{"text": "Yes", "idx": 2, "label": 1}],
            },
        ],
    },
}
HUB_MULTIRC = [
    {"paragraph": "<b>Sent 1: </b>Tom ran.<br>", "question": q, "answer": a,
     "idx": {"paragraph": 0, "question": qi, "answer": ai}, "label": y}
    for q, qi, a, ai, y in [("Who ran?", 0, "Tom", 0, 1), ("Who ran?", 0, "Ann", 1, 0),
                            ("Did Tom run?", 1, "Yes", 2, 1)]
]  # fmt: skip
DIST_RECORD = {
    "source": "CNN",
    "idx": 5,
    "passage": {
        "text": RECORD_HUB["passage"],
        # Inclusive spans: Tom, Ann, Rome, Tom (again).
        "entities": [{"start": 0, "end": 2}, {"start": 9, "end": 11}, {"start": 16, "end": 19},
                     {"start": 33, "end": 35}],
    },
    "qas": [{"query": "@placeholder won the race.", "idx": 11,
             "answers": [{"start": 0, "end": 2, "text": "Tom"}, {"start": 33, "end": 35, "text": "Tom"}]}],
}  # fmt: skip
HUB_RECORD = {**RECORD_HUB, "entities": ["Tom", "Ann", "Rome"], "answers": ["Tom"]}
DIST_CB = {
    "premise": "A dog ran.",
    "hypothesis": "An animal ran.",
    "label": "contradiction",
    "idx": 0,
}
DIST_BOOLQ = {"question": "is it", "passage": "It is.", "idx": 0, "label": True}
DIST_WSC = {
    "text": WSC_HUB["text"],
    "target": {k: WSC_HUB[k] for k in ("span1_index", "span2_index", "span1_text", "span2_text")},
    "idx": 4,
    "label": True,
}


@pytest.mark.parametrize(
    ("name", "dist_rows", "hub_rows"),
    [
        ("multirc", [DIST_MULTIRC], HUB_MULTIRC),
        ("record", [DIST_RECORD], [HUB_RECORD]),
        ("cb", [DIST_CB], [{**DIST_CB, "label": 1}]),
        ("boolq", [DIST_BOOLQ], [{**DIST_BOOLQ, "label": 1}]),
        ("wsc", [DIST_WSC], [WSC_HUB]),
    ],
)
@pytest.mark.parametrize("split", ["train", "validation"])
def test_distribution_and_hub_schema_give_same_examples(tmp_path, name, dist_rows, hub_rows, split):
    task = get_task(name)
    # Official distribution: <Task>/train.jsonl and val.jsonl under a shared root.
    dist_file = {"train": "train.jsonl", "validation": "val.jsonl"}[split]
    write_jsonl(tmp_path / "dist" / task.dir_names[0].upper() / dist_file, dist_rows)
    write_parquet(tmp_path / "hub" / f"{split}.parquet", hub_rows)
    from_dist = task.examples(split, tmp_path / "dist")
    from_hub = task.examples(split, tmp_path / "hub")
    assert from_dist == from_hub
    assert from_hub  # non-empty: the comparison above is not vacuous


def test_distribution_multirc_flattens_to_one_record_per_answer(tmp_path):
    write_jsonl(tmp_path / "val.jsonl", [DIST_MULTIRC])
    records = get_task("multirc").load_records("validation", tmp_path)
    assert [(r["answer"], r["label"], r["idx"]["question"]) for r in records] == [
        ("Tom", 1, 0),
        ("Ann", 0, 0),
        ("Yes", 1, 1),
    ]


# ------------------------------------------------------------------------- local loading
def test_load_hub_schema_parquet_and_jsonl(tmp_path):
    rows = [
        {"premise": "P0.", "hypothesis": "H0.", "idx": 0, "label": 0},
        {"premise": "P1.", "hypothesis": "H1.", "idx": 1, "label": 2},
    ]
    write_parquet(tmp_path / "train.parquet", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:1])
    cb = get_task("cb")
    assert cb.load_records("train", tmp_path) == rows
    assert [(e.inputs, e.targets) for e in cb.examples("train", tmp_path)] == [
        ("hypothesis: H0. premise: P0.", "entailment"),
        ("hypothesis: H1. premise: P1.", "neutral"),
    ]
    assert [e.targets for e in cb.examples("validation", tmp_path)] == ["entailment"]


def test_load_hub_shard_in_task_subdirectory(tmp_path):
    row = {"question": "q", "passage": "p", "idx": 0, "label": 0}
    write_parquet(tmp_path / "boolq" / "validation-00000-of-00001.parquet", [row])
    assert get_task("boolq").load_records("validation", tmp_path) == [row]


def test_missing_split_names_task_split_and_expected_files(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl", [{"premise": "p", "hypothesis": "h", "idx": 0, "label": 0}]
    )
    with pytest.raises(ValueError, match=r"'rte'.*'validation'.*val\.jsonl"):
        get_task("rte").load_records("validation", tmp_path)


def test_missing_column_names_task_split_and_column(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"premise": "p", "idx": 0, "label": 0}])
    with pytest.raises(ValueError, match=r"'rte'.*'train'.*\['hypothesis'\]"):
        get_task("rte").load_records("train", tmp_path)


def test_test_split_and_unlabeled_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'test'.*never"):
        get_task("cb").load_records("test", tmp_path)
    write_jsonl(
        tmp_path / "val.jsonl", [{"premise": "p", "hypothesis": "h", "idx": 0, "label": -1}]
    )
    with pytest.raises(ValueError, match="unlabeled"):
        get_task("cb").load_records("validation", tmp_path)


def _with(record: dict, path: tuple, value) -> dict:
    """A deep copy of ``record`` with the field at ``path`` (keys and list indices) set."""
    out = json.loads(json.dumps(record))
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


TEXT_CASES = [
    # (task, a good record, the field made bad, its name in the message)
    ("cb", DIST_CB, ("premise",), "premise"),
    ("boolq", DIST_BOOLQ, ("question",), "question"),
    ("wsc", DIST_WSC, ("target", "span1_text"), "target.span1_text"),
    ("wsc", DIST_WSC, ("text",), "text"),
    ("multirc", DIST_MULTIRC, ("passage", "questions", 1, "question"), "passage.questions[1].question"),
    ("multirc", DIST_MULTIRC, ("passage", "questions", 0, "answers", 1, "text"),
     "passage.questions[0].answers[1].text"),
    ("record", DIST_RECORD, ("qas", 0, "query"), "qas[0].query"),
    ("record", HUB_RECORD, ("entities", 1), "entities[1]"),
]  # fmt: skip


@pytest.mark.parametrize("value", [None, 7])
@pytest.mark.parametrize(("name", "record", "path", "field"), TEXT_CASES)
def test_a_text_field_without_text_is_refused_naming_file_line_and_field(
    tmp_path, name, record, path, field, value
):
    """Before, a null became the text "None" (a number its digits), with no warning."""
    task = get_task(name)
    assert task.load_records("validation", write_rows(tmp_path / "good", [record]))
    bad = write_rows(tmp_path / "bad", [record, _with(record, path, value)])
    what = "null" if value is None else "7 (int)"
    with pytest.raises(ValueError) as err:
        task.load_records("validation", bad)
    assert str(err.value).startswith(
        f"{bad}/validation.jsonl:2: field {field!r} is {what}, not text; task {name!r} reads it"
    )


def write_rows(directory, rows):
    write_jsonl(directory / "validation.jsonl", rows)
    return directory


def test_unknown_string_label_is_a_clear_error(tmp_path):
    write_jsonl(
        tmp_path / "val.jsonl", [{"premise": "p", "hypothesis": "h", "idx": 0, "label": "maybe"}]
    )
    with pytest.raises(ValueError, match=r"'maybe'.*entailment"):
        get_task("cb").load_records("validation", tmp_path)


def test_a_data_dir_shared_by_several_tasks_gives_each_its_own_sub_directory(tmp_path):
    """A job of several tasks (task=superglue, a mixture) with one task.data_dir: each task
    reads its own sub-directory; a split file at the top (any task's?) is refused. A task alone
    still reads the top first."""
    from repro.tasks.base import data_dir_for

    row = {"premise": "p", "hypothesis": "h", "idx": 0, "label": 0}
    for name in ("RTE", "cb"):
        write_jsonl(tmp_path / name / "train.jsonl", [row])
    rte, cb = get_task("rte"), get_task("cb")
    both = ("rte", "cb")
    assert data_dir_for(rte, tmp_path, "cache", tasks=both) == tmp_path / "RTE"
    assert data_dir_for(cb, tmp_path, "cache", tasks=both) == tmp_path / "cb"
    with pytest.raises(ValueError, match=r"no sub-directory for it \(looked for \['boolq'\]\)"):
        data_dir_for(get_task("boolq"), tmp_path, "cache", tasks=("boolq", "cb"))

    write_jsonl(tmp_path / "train.jsonl", [row])  # whose is it?
    for task in (rte, cb):
        with pytest.raises(ValueError, match=r"holds train\.jsonl at its top.*\(rte, cb\)"):
            data_dir_for(task, tmp_path, "cache", tasks=both)
    # one task: the top-level file, as before
    assert data_dir_for(rte, tmp_path, "cache", tasks=("rte",)) == tmp_path
    assert rte.find_split_file("train", tmp_path) == tmp_path / "train.jsonl"


# ------------------------------------------------------------------------------ registry
def test_registry_holds_superglue_and_transfer_tasks():
    assert set(TASKS) >= {*SUPERGLUE, "qqp", "mrpc", "squad", "mrqa"}
    assert expand_task("superglue") == SUPERGLUE
    assert expand_task("cb") == ("cb",)
    assert get_task("wsc").hub_config == "wsc.fixed"


def test_unknown_task_lists_allowed_names():
    with pytest.raises(ValueError, match=r"'boolqq'.*'boolq'.*'wsc'"):
        get_task("boolqq")


def test_register_task_refuses_a_different_task_under_a_taken_name():
    cb = get_task("cb")
    register_task(cb)  # the same object again is fine
    from dataclasses import replace

    with pytest.raises(ValueError, match="'cb'"):
        register_task(replace(cb, labels=("yes", "no", "maybe")))


def test_class_words_are_labels_or_paper_init_words():
    assert get_task("cb").class_words == ("entailment", "contradiction", "neutral")
    assert get_task("boolq").class_words == ("False", "True")
    assert get_task("record").class_words == (
        "commonsense",
        "reasoning",
        "reading",
        "comprehension",
    )
    assert get_task("wsc").class_words == ("commonsense", "pronoun", "resolution")


# ----------------------------------------------------------------------- scoring through tasks
def examples_of(name, records, train=False) -> list[Example]:
    return get_task(name).format(records, train=train)


def test_invalid_generations_count_as_wrong():
    cb_records = [
        {"premise": "p", "hypothesis": "h", "idx": i, "label": y} for i, y in enumerate([0, 1])
    ]
    cb = get_task("cb")
    m = cb.score(["entailment", "contradiction!"], examples_of("cb", cb_records))
    assert m["accuracy"] == pytest.approx(50.0)
    # entailment F1 1, contradiction F1 0 (missed), neutral absent -> 0.
    assert m["f1_macro"] == pytest.approx(100 / 3)

    boolq = [{"question": "q", "passage": "p", "idx": i, "label": 0} for i in range(2)]
    assert get_task("boolq").score(["False", "false"], examples_of("boolq", boolq)) == {
        "accuracy": 50.0
    }

    assert get_task("wsc").score([""], examples_of("wsc", [{**WSC_HUB, "label": 0}])) == {
        "accuracy": 0.0
    }


def test_cb_task_score_averages_f1_and_accuracy():
    assert get_task("cb").task_score({"f1_macro": 60.0, "accuracy": 80.0}) == pytest.approx(70.0)
    with pytest.raises(KeyError, match="accuracy"):
        get_task("cb").task_score({"f1_macro": 60.0})


def test_superglue_score_arithmetic():
    per_task = {
        "boolq": {"accuracy": 80.0},
        "cb": {"f1_macro": 60.0, "accuracy": 70.0},  # 65
        "copa": {"accuracy": 70.0},
        "multirc": {"f1a": 50.0, "exact_match": 30.0},  # 40
        "record": {"f1": 90.0, "exact_match": 80.0},  # 85
        "rte": {"accuracy": 60.0},
        "wic": {"accuracy": 55.0},
        "wsc": {"accuracy": 65.0},
    }
    # (80 + 65 + 70 + 40 + 85 + 60 + 55 + 65) / 8 = 520 / 8
    assert superglue_score(per_task) == pytest.approx(65.0)
    scores = {t: get_task(t).task_score(m) for t, m in per_task.items()}
    assert scores["cb"] == 65.0
    assert superglue_score(scores) == pytest.approx(65.0)


def test_superglue_score_refuses_partial_or_foreign_tasks():
    scores = dict.fromkeys(SUPERGLUE, 50.0)
    with pytest.raises(ValueError, match=r"missing \['wsc'\]"):
        superglue_score({t: s for t, s in scores.items() if t != "wsc"})
    with pytest.raises(ValueError, match=r"unexpected \['qqp'\]"):
        superglue_score({**scores, "qqp": 1.0})


def test_multirc_scores_through_task():
    exs = examples_of("multirc", HUB_MULTIRC)
    m = get_task("multirc").score(["True", "False", "False"], exs)
    # Question 0 all right, question 1 wrong -> EM 50; F1a: tp 1, fn 1 -> 2/3.
    assert m == pytest.approx({"f1a": 200 / 3, "exact_match": 50.0})


def test_record_scores_first_prediction_per_query():
    train_style = examples_of("record", [RECORD_HUB], train=True)  # two examples, one query
    m = get_task("record").score(["Ann", "Tom"], train_style)
    assert m == {"exact_match": 0.0, "f1": 0.0}


def test_wsc_scores_referent_match_against_label():
    exs = examples_of("wsc", [WSC_HUB, {**WSC_HUB, "span1_text": "the suitcase", "label": 0}])
    # "trophy" names referent "The trophy" (label 1): right; "suitcase" names "the suitcase"
    # whose label is 0: wrong.
    assert get_task("wsc").score(["trophy", "suitcase"], exs) == {"accuracy": 50.0}


def test_zero_shot_label_mapping_qqp_to_mrpc():
    mrpc_records = [
        {"sentence1": "a", "sentence2": "b", "idx": i, "label": y} for i, y in enumerate([1, 0])
    ]
    qqp, mrpc = get_task("qqp"), get_task("mrpc")
    mapped = map_labels(["duplicate", "not_duplicate"], qqp, mrpc)
    assert mapped == ["equivalent", "not_equivalent"]
    assert mrpc.score(mapped, examples_of("mrpc", mrpc_records)) == {"f1": 100.0, "accuracy": 100.0}
    # Unmapped QQP words are not MRPC labels: wrong.
    assert (
        mrpc.score(["duplicate", "not_duplicate"], examples_of("mrpc", mrpc_records))["accuracy"]
        == 0
    )


def test_mrqa_reports_f1_per_subset():
    records = [
        {"subset": "DROP", "qid": "1", "context": "c", "question": "q", "answers": ["four"]},
        {"subset": "RACE", "qid": "2", "context": "c", "question": "q", "answers": ["blue sky"]},
    ]
    m = get_task("mrqa").score(["four", "sky"], examples_of("mrqa", records))
    assert m["f1/DROP"] == 100.0
    assert m["f1/RACE"] == pytest.approx(100 * 2 / 3)
    assert m["f1"] == pytest.approx((100 + 200 / 3) / 2)


def test_score_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        get_task("wsc").score(["a", "b"], examples_of("wsc", [WSC_HUB]))


def test_every_registered_task_is_a_frozen_task():
    for task in TASKS.values():
        assert isinstance(task, Task)
        assert task.eval_split != "test" or task.name == "mrqa"


def test_the_core_does_not_import_the_toy_world():
    """Layers point one way: the toy world registers its tasks with the core, not the reverse."""
    import subprocess
    import sys

    code = (
        "import sys, repro.tasks, repro.model, repro.trainer, repro.rundir;"
        "assert not [m for m in sys.modules if m.startswith('repro.toyworld')], 'imported';"
        "import repro.toyworld; from repro.tasks import get_task;"
        "assert get_task('toy_review').generate is not None"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
