"""The 8 SuperGLUE tasks in T5's taskless text-to-text form (PAPER.md, format table).

Inputs are ``key: value`` pairs joined by spaces, keys in alphabetical order (T5's ``glue()``
default) except where T5 fixes an order (MultiRC, WiC); T5's leading task-name word is dropped.
Records may come in the hub schema (``aps/super_glue``) or the official SuperGLUE distribution
(``train.jsonl``/``val.jsonl``); the normalisers below map the latter to the former so that
both give the same examples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from repro import metrics
from repro.tasks.base import Example, Task, classification_metric, label_id

HUB_ID = "aps/super_glue"


# ------------------------------------------------------------------------------ formatting
def join_fields(record: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``"k1: v1 k2: v2 ..."`` in the given key order."""
    return " ".join(f"{key}: {record[key]}" for key in keys)


def classification_formatter(keys: Sequence[str]):
    """A formatter for ``key: value`` inputs with the label string as target."""

    def format_record(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
        label = int(record["label"])
        meta = {"idx": record.get("idx"), "label": label}
        return [Example(join_fields(record, keys), task.labels[label], meta)]

    return format_record


def clean_multirc_paragraph(text: str) -> str:
    """MultiRC paragraphs carry HTML: ``<br>`` becomes a space, ``<b>``/``</b>`` are removed."""
    return re.sub(r"</?b>", "", text.replace("<br>", " "))


def format_multirc(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    """``question: … answer: … paragraph: …`` → ``False``/``True``; grouped by question."""
    cleaned = {**record, "paragraph": clean_multirc_paragraph(record["paragraph"])}
    label, idx = int(record["label"]), record["idx"]
    meta = {
        "idx": dict(idx),
        "label": label,
        # Question ids are unique in SuperGLUE; the paragraph id makes that not matter.
        "group": (idx["paragraph"], idx["question"]),
    }
    return [
        Example(join_fields(cleaned, ("question", "answer", "paragraph")), task.labels[label], meta)
    ]


def clean_record_passage(text: str) -> str:
    """Joins ReCoRD's highlight bullets into sentences (T5's rule).

    ``\\n@highlight\\n`` becomes a space after sentence-final punctuation or a quote, else
    ``". "``.
    """
    text = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text)
    return text.replace("\n@highlight\n", ". ")


def format_record_task(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    """``query: … entities: e1, e2, … passage: …`` → a gold entity.

    Training gives one example per (unique, sorted) gold answer; evaluation gives one example
    per query whose ``meta["answers"]`` holds every gold answer (the best one counts). Entities
    are the sorted unique entity strings, as in the TFDS data T5 was trained on (the hub's
    order is not guaranteed).
    """
    answers = sorted(set(record["answers"]))
    idx = record["idx"]
    if not answers:
        raise ValueError(
            f"task {task.name!r}: query {dict(idx)} has no gold answer (test data?); "
            "only labeled train/validation data can be used"
        )
    entities = ", ".join(sorted(set(record["entities"])))
    inputs = (
        f"query: {record['query']} entities: {entities} "
        f"passage: {clean_record_passage(record['passage'])}"
    )
    meta = {"idx": dict(idx), "group": (idx["passage"], idx["query"]), "answers": tuple(answers)}
    targets = answers if train else answers[:1]
    return [Example(inputs, answer, meta) for answer in targets]


def mark_pronoun(text: str, index: int, pronoun: str) -> str:
    """Marks the pronoun at word ``index`` (words split on single spaces) as ``*pronoun*``.

    For a text T5 cannot mark (``wsc_simple`` asserts the pronoun sits at ``index``): punctuation
    glued to the pronoun (``him,"``) is split off (``*him* ,"``); otherwise the nearest word equal
    to the pronoun is marked. :func:`wsc_inputs` uses this only for texts outside SuperGLUE.
    """
    words = text.split(" ")
    if not 0 <= index < len(words):
        raise ValueError(f"WSC pronoun index {index} outside a text of {len(words)} words")
    word = words[index]
    if word != pronoun:
        rest = word[len(pronoun) :]
        if word.startswith(pronoun) and rest and not rest[0].isalnum():
            words[index] = f"*{pronoun}* {rest}"
            return " ".join(words)
        matches = [i for i, w in enumerate(words) if w == pronoun]
        if not matches:
            raise ValueError(f"WSC pronoun {pronoun!r} not found as a word in {text!r}")
        index = min(matches, key=lambda i: abs(i - index))
    words[index] = f"*{pronoun}*"
    return " ".join(words)


# T5's ``_wsc_inputs`` hard-codes the blanked text of the two SuperGLUE WSC texts whose pronoun
# is not the word at ``span2_index`` (train 137/453/533 glue "him" to punctuation and end with a
# space; validation 42 points one word off). Keys: the text; values: T5's text with "X".
T5_WSC_SPECIAL_CASES = {
    "The boy continued to whip the pony , and eventually the pony threw him over. John laughed "
    'out quite loud. "Good for him," he said. ': "The boy continued to whip the pony , and "
    'eventually the pony threw him over. John laughed out quite loud. "Good for X ," he said.',
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic "
    "pebble in an iron safe . Some day they might want to use it , but really for now, what more "
    "could they wish for?": "When they had eventually calmed down a bit , and had gotten home, "
    "Mr. Farley put the magic pebble in an iron safe . Some day they might want to use X , but "
    "really for now, what more could they wish for?",
}


def wsc_inputs(text: str, index: int, pronoun: str) -> str:
    """T5's ``wsc_simple`` inputs (without its ``wsc:`` prefix): the pronoun marked ``*he*``.

    As T5: the word at ``index`` (text split on single spaces) is replaced by ``X`` (or the text
    is one of :data:`T5_WSC_SPECIAL_CASES`), then every ``" X "`` becomes ``" *pronoun* "``.
    Texts T5 would reject (pronoun not at ``index``, or at word 0) go to :func:`mark_pronoun`.
    """
    blanked = T5_WSC_SPECIAL_CASES.get(text)
    if blanked is None:
        words = text.split(" ")
        if not (0 < index < len(words) and words[index] == pronoun):
            return mark_pronoun(text, index, pronoun)
        blanked = " ".join([" ".join(words[:index]), "X", " ".join(words[index + 1 :])])
    return re.sub(" X ", lambda _: f" *{pronoun}* ", blanked)


def format_wsc(task: Task, record: Mapping[str, Any], train: bool) -> list[Example]:
    """The text with the pronoun marked ``*he*`` → the candidate referent (``span1_text``).

    Training keeps only examples whose candidate is the true referent (label True); at
    evaluation every example is kept and the prediction is judged by ``wsc_simple``.
    """
    label = int(record["label"])
    if train and label != 1:
        return []
    inputs = wsc_inputs(record["text"], int(record["span2_index"]), record["span2_text"])
    meta = {"idx": record.get("idx"), "label": label, "referent": record["span1_text"]}
    return [Example(inputs, record["span1_text"], meta)]


# ---------------------------------------------------------------------------- normalising
def normalise_flat(task: Task, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flat tasks differ between schemas only in the label type (bool/string vs int)."""
    out = dict(record)
    if "label" in out:
        out["label"] = label_id(task, out["label"])
    return [out]


def normalise_multirc(task: Task, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Distribution: one record per paragraph with nested questions and answers → one per answer."""
    passage = record.get("passage")
    if not isinstance(passage, Mapping):
        return normalise_flat(task, record)
    rows = []
    for question in passage["questions"]:
        for answer in question["answers"]:
            rows.append(
                {
                    "paragraph": passage["text"],
                    "question": question["question"],
                    "answer": answer["text"],
                    "idx": {
                        "paragraph": record["idx"],
                        "question": question["idx"],
                        "answer": answer["idx"],
                    },
                    "label": label_id(task, answer.get("label")),
                }
            )
    return rows


def normalise_record(task: Task, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Distribution: one record per passage with entity spans and ``qas`` → one per query."""
    if "qas" not in record:
        return [dict(record)]
    passage = record["passage"]
    text = passage["text"]
    # Entity and answer spans are inclusive at both ends.
    entities = sorted({text[e["start"] : e["end"] + 1] for e in passage["entities"]})
    return [
        {
            "passage": text,
            "query": qa["query"],
            "entities": entities,
            "answers": sorted({a["text"] for a in qa.get("answers", [])}),
            "idx": {"passage": record["idx"], "query": qa["idx"]},
        }
        for qa in record["qas"]
    ]


# Spans TFDS's ``_fix_wst`` leaves as they are: the referent has words between its parts.
WSC_UNFIXABLE_SPANS = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")


def fix_wsc_spans(record: Mapping[str, Any]) -> dict[str, Any]:
    """The span repairs of ``super_glue/wsc.fixed`` (TFDS and the hub's loading script).

    A span text that is not a substring of the text gets the case of the text's word at the
    span's index on its first letter, loses trailing ``.``, and has ``\\n`` turned into a space
    (the official files' 49 True train + validation examples such as ``The demonstrators`` for
    "the demonstrators"). A span already in the text is kept, so records from the hub (fixed
    already) pass through unchanged. As in TFDS, a span containing ``theyscold`` moves
    ``span2_index`` to 10 (TFDS's text repair there is a no-op and is not copied).
    """
    out = dict(record)
    for key in ("span1", "span2"):
        span, index = out[f"{key}_text"], int(out[f"{key}_index"])
        if span in out["text"] or span in WSC_UNFIXABLE_SPANS:
            continue
        if "theyscold" in span:
            out["span2_index"] = 10
        words = out["text"].split()
        if span and 0 <= index < len(words):
            first = span[0].lower() if words[index][0].islower() else span[0].upper()
            span = first + span[1:]
        out[f"{key}_text"] = span.rstrip(".").replace("\n", " ")
    return out


def normalise_wsc(task: Task, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Distribution: the spans sit in a nested ``target`` dict; both schemas get ``wsc.fixed``'s
    span repairs (:func:`fix_wsc_spans`)."""
    out = dict(record)
    target = out.pop("target", None)
    if isinstance(target, Mapping):
        out.update(target)
    if all(f"{k}_{f}" in out for k in ("span1", "span2") for f in ("text", "index")):
        out = fix_wsc_spans(out)
    return normalise_flat(task, out)


# ---------------------------------------------------------------------------------- metrics
def multirc_metric(task: Task, predictions: Sequence[str], examples: Sequence[Example]):
    """F1a over all answers + exact match per question."""
    labels = [{"False": 0, "True": 1}.get(p.strip(), metrics.INVALID) for p in predictions]
    return metrics.multirc(
        [int(ex.meta["label"]) for ex in examples], labels, [ex.meta["group"] for ex in examples]
    )


def record_metric(task: Task, predictions: Sequence[str], examples: Sequence[Example]):
    """SQuAD EM/F1, max over the gold answers, one prediction per query.

    If a query appears several times (train-style examples), its first prediction counts,
    as T5's ``deduplicate_metric`` does.
    """
    first: dict[Any, tuple[str, Sequence[str]]] = {}
    for prediction, ex in zip(predictions, examples, strict=True):
        first.setdefault(ex.meta["group"], (prediction, ex.meta["answers"]))
    preds, golds = zip(*first.values(), strict=True)
    return metrics.squad(preds, golds)


def wsc_metric(task: Task, predictions: Sequence[str], examples: Sequence[Example]):
    """Accuracy of "names the referent" (``wsc_simple``) against the label."""
    named = [
        metrics.wsc_simple(p, ex.meta["referent"])
        for p, ex in zip(predictions, examples, strict=True)
    ]
    return {"accuracy": metrics.accuracy([int(ex.meta["label"]) for ex in examples], named)}


# ------------------------------------------------------------------------------------ tasks
def _classification(
    name: str,
    keys: Sequence[str],
    labels: tuple[str, ...],
    *,
    metric_names=("accuracy",),
    dir_names: tuple[str, ...] = (),
    config: str | None = None,
) -> Task:
    return Task(
        name=name,
        hub_id=HUB_ID,
        hub_config=config or name,
        labels=labels,
        init_words=(),
        metric_names=tuple(metric_names),
        formatter=classification_formatter(keys),
        metric=classification_metric,
        columns=(*keys, "label"),
        normaliser=normalise_flat,
        text_fields=tuple(keys),
        dir_names=(name, *dir_names),
    )


FALSE_TRUE = ("False", "True")

BOOLQ = _classification("boolq", ("passage", "question"), FALSE_TRUE)
CB = _classification(
    "cb",
    ("hypothesis", "premise"),
    ("entailment", "contradiction", "neutral"),
    metric_names=("f1_macro", "accuracy"),
)
COPA = _classification(
    "copa", ("choice1", "choice2", "premise", "question"), ("choice1", "choice2")
)
RTE = _classification("rte", ("hypothesis", "premise"), ("entailment", "not_entailment"))
# T5 fixes WiC's keys (ignoring the word offsets start1/end1/start2/end2).
WIC = _classification("wic", ("sentence1", "sentence2", "word"), FALSE_TRUE)

MULTIRC = Task(
    name="multirc",
    hub_id=HUB_ID,
    hub_config="multirc",
    labels=FALSE_TRUE,
    init_words=(),
    metric_names=("f1a", "exact_match"),
    formatter=format_multirc,
    metric=multirc_metric,
    columns=("paragraph", "question", "answer", "idx", "label"),
    normaliser=normalise_multirc,
    # the hub's flat fields and the distribution's nested passage, its text and answers' text
    text_fields=("paragraph", "question", "answer", "passage", "text"),
    dir_names=("multirc",),
)

RECORD = Task(
    name="record",
    hub_id=HUB_ID,
    hub_config="record",
    labels=(),
    # Paper footnote 7: init words for the class-label initialiser of a task without labels.
    init_words=("commonsense", "reasoning", "reading", "comprehension"),
    metric_names=("f1", "exact_match"),
    formatter=format_record_task,
    metric=record_metric,
    columns=("passage", "query", "entities", "answers", "idx"),
    normaliser=normalise_record,
    text_fields=("passage", "query", "entities", "answers", "text"),
    dir_names=("record",),
)

WSC = Task(
    name="wsc",
    hub_id=HUB_ID,
    hub_config="wsc.fixed",
    labels=(),
    init_words=("commonsense", "pronoun", "resolution"),
    metric_names=("accuracy",),
    formatter=format_wsc,
    metric=wsc_metric,
    columns=("text", "span1_index", "span2_index", "span1_text", "span2_text", "label"),
    normaliser=normalise_wsc,
    text_fields=("text", "span1_text", "span2_text"),
    dir_names=("wsc", "wsc.fixed"),
    mixture_prefix="wsc:",  # T5's wsc_simple(label="wsc:"), in its SuperGLUE mixture
)

SUPERGLUE_TASKS: tuple[Task, ...] = (BOOLQ, CB, COPA, MULTIRC, RECORD, RTE, WIC, WSC)
