"""What a task is: a frozen record of where its data lives, how a record becomes text, and how
predictions are scored.

A task is data, not a class hierarchy: the per-task behaviour (formatting, schema
normalisation, metric) is a plain function stored on the :class:`Task`. Records are always
handled in the **hub schema** (``aps/super_glue``, ``nyu-mll/glue``, ...); other on-disk layouts
are normalised to it on load, so formatting and scoring only ever see one schema.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import metrics
from repro.files import build_once
from repro.hub import check_hub_reachable

logger = logging.getLogger(__name__)

# Local file names accepted for each split: the hub's names plus the official SuperGLUE
# distribution's ``val`` and the common ``dev``.
SPLIT_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "val", "dev"),
    "test": ("test",),
}
FILE_SUFFIXES = (".parquet", ".jsonl", ".json")


@dataclass(frozen=True)
class Example:
    """One text-to-text example.

    Attributes:
        inputs: Encoder text, e.g. ``"hypothesis: ... premise: ..."``.
        targets: Decoder text, e.g. ``"entailment"``.
        meta: What scoring needs besides the target text: ``idx``, the class id ``label``,
            ``group`` (MultiRC question, ReCoRD query), all gold ``answers``, WSC ``referent``...
    """

    inputs: str
    targets: str
    meta: Mapping[str, Any] = field(default_factory=dict)


# formatter(task, record, train) -> examples of one hub-schema record.
Formatter = Callable[["Task", Mapping[str, Any], bool], list[Example]]
# metric(task, predictions, examples) -> {metric name: value on the 0-100 scale}.
Metric = Callable[["Task", Sequence[str], Sequence[Example]], dict[str, float]]
# normaliser(task, record) -> hub-schema records (a nested distribution record may give many).
Normaliser = Callable[["Task", Mapping[str, Any]], list[dict[str, Any]]]


def keep_record(task: Task, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Default normaliser: the record is already in the hub schema."""
    return [dict(record)]


@dataclass(frozen=True)
class Task:
    """One benchmark task in taskless text-to-text form.

    Attributes:
        name: Registry name, e.g. ``"cb"``.
        hub_id: Dataset id on the hub, e.g. ``"aps/super_glue"``.
        hub_config: Hub config name, e.g. ``"wsc.fixed"``; None for datasets without configs.
        labels: Verbaliser strings, index = class id; ``()`` for generative tasks. The same
            strings feed the class-label initialiser, so the two cannot drift apart.
        init_words: Words the class-label initialiser embeds when ``labels == ()``.
        metric_names: Metrics averaged into the task's single score.
        formatter: Turns one hub-schema record into examples (``train`` applies train-time
            rules such as one ReCoRD example per answer).
        metric: Scores predictions; returns at least every name in ``metric_names``.
        columns: Hub-schema columns the formatter needs; checked on load.
        normaliser: Maps a record of another on-disk schema (e.g. the official SuperGLUE
            distribution) to hub-schema records; records already in the hub schema pass through.
        text_fields: Fields the formatter reads as text. In a local file each must hold a
            string (or a list of strings) wherever it appears, nested objects of the official
            distribution included; a null or a number is refused naming the file, the line and
            the field (:func:`check_text_fields`), never formatted as ``"None"``.
        dir_names: Sub-directory names (case-insensitive) under which this task's files may sit
            in a ``data_dir`` shared by several tasks, e.g. ``("boolq",)``.
        max_input_length: Token limit of the inputs (eos included).
        max_target_length: Token limit of the targets (eos included); None (the SuperGLUE
            tasks) = sized at run time from the data: the longest train or eval gold target
            plus eos (:func:`repro.data.target_limit`), so every answer can be produced.
        train_split: Hub split used for training.
        eval_split: Hub split used for evaluation and early stopping.
        generate: For a task whose data the suite generates (toy tasks): writes its
            ``train.jsonl`` and ``validation.jsonl`` into the directory it is given (seeded,
            the same files every time). None: the data come from the hub or ``data_dir``.
        mixture_prefix: The word a multi-task mixture puts before each input to name the task
            (``method=model_multitask``): T5's preprocessors write the benchmark's name
            (``"rte hypothesis: ..."``), but ``wsc:`` for WSC (``wsc_simple``'s label, which
            T5's DPR examples carry too). None: the task's name.
        select: Which of a split's hub-schema records become examples, given them all in
            order (MRQA: the first question of each context, as the official path); None: all.
    """

    name: str
    hub_id: str
    hub_config: str | None
    labels: tuple[str, ...]
    init_words: tuple[str, ...]
    metric_names: tuple[str, ...]
    formatter: Formatter
    metric: Metric
    columns: tuple[str, ...] = ()
    normaliser: Normaliser = keep_record
    text_fields: tuple[str, ...] = ()
    dir_names: tuple[str, ...] = ()
    max_input_length: int = 512
    max_target_length: int | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    generate: Callable[[Path], Any] | None = None
    mixture_prefix: str | None = None
    select: Callable[[Task, list[dict]], list[dict]] | None = None

    @property
    def class_words(self) -> tuple[str, ...]:
        """What the class-label initialiser embeds: the labels, else the init words."""
        return self.labels or self.init_words

    @property
    def splits(self) -> tuple[str, ...]:
        """The only splits this task reads: never an unlabeled test split."""
        return (self.train_split, self.eval_split)

    # ----------------------------------------------------------------------------- loading
    def load_records(self, split: str, data_dir: str | Path | None = None) -> list[dict]:
        """Reads one split as hub-schema dicts.

        Args:
            split: ``train_split`` or ``eval_split`` (e.g. ``"train"``, ``"validation"``).
            data_dir: None to load from the hub (a task the suite generates, such as
                ``toy_review``: its files, generated once under the default cache,
                :func:`generated_data_dir`); else a local directory holding
                ``<split>.parquet|jsonl|json`` in the hub schema or the official SuperGLUE
                distribution (``train.jsonl``/``val.jsonl``), possibly in a sub-directory named
                after the task.

        Raises:
            ValueError: Unknown split, missing file or column, or unlabeled (test) records.
        """
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r}: split {split!r} is not used; allowed: {self.splits} "
                "(test splits have no labels and are never trained or scored on)"
            )
        if data_dir is None and self.generate is not None:
            data_dir = generated_data_dir(self)
        if data_dir is None:
            rows, source = self._load_hub(split), f"{self.hub_id}/{self.hub_config or ''}"
        else:
            path = self.find_split_file(split, Path(data_dir))
            located = read_located_rows(path)
            for where, row in located:
                check_text_fields(self, row, where)
            rows, source = [row for _, row in located], str(path)
        records = [hub for row in rows for hub in self.normaliser(self, row)]
        self._check_columns(records, split, source)
        return records

    def _load_hub(self, split: str) -> list[dict]:
        import datasets  # imported late: loading from disk must not need the hub stack

        # seconds, not minutes of retries, if offline
        check_hub_reachable(needed_for=f"to download task {self.name!r} ({self.hub_id})")
        try:
            dataset = datasets.load_dataset(self.hub_id, self.hub_config, split=split)
        except Exception as err:  # network, offline mode, unknown config: one clear line
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"task {self.name!r}: cannot load split {split!r} of {self.hub_id} "
                f"({self.hub_config}) from the hub ({reason}); set task.data_dir to local files"
            ) from err
        return list(dataset)

    def find_split_file(self, split: str, data_dir: Path) -> Path:
        """The local file holding ``split``, or a ValueError naming what was looked for."""
        if not data_dir.is_dir():
            raise ValueError(f"task {self.name!r}: data_dir {str(data_dir)!r} is not a directory")
        roots = [data_dir, *self.own_sub_dirs(data_dir)]
        stems = SPLIT_FILE_NAMES.get(split, (split,))
        for root in roots:
            for stem in stems:
                for suffix in FILE_SUFFIXES:
                    if (root / f"{stem}{suffix}").is_file():
                        return root / f"{stem}{suffix}"
                # Hub snapshots shard parquet files as <split>-00000-of-00001.parquet.
                shards = sorted(root.glob(f"{stem}-*.parquet"))
                if len(shards) == 1:
                    return shards[0]
                if len(shards) > 1:
                    raise ValueError(
                        f"task {self.name!r}: split {split!r} is sharded into {len(shards)} "
                        f"files under {root}; merge them into one {stem}.parquet"
                    )
        names = [f"{s}{x}" for s in stems for x in FILE_SUFFIXES]
        where = [str(r) for r in roots]
        raise ValueError(
            f"task {self.name!r}: no file for split {split!r} in {where}; expected one of {names}"
        )

    def own_sub_dirs(self, data_dir: Path) -> list[Path]:
        """The sub-directories of ``data_dir`` named after this task (its name or one of its
        ``dir_names``, case-insensitive), sorted."""
        wanted = {n.lower() for n in (self.name, *self.dir_names)}
        return sorted(d for d in data_dir.iterdir() if d.is_dir() and d.name.lower() in wanted)

    def split_files_in(self, directory: Path) -> list[Path]:
        """Files directly in ``directory`` that :meth:`find_split_file` would take for one of
        this task's splits."""
        stems = [s for split in self.splits for s in SPLIT_FILE_NAMES.get(split, (split,))]
        found = [directory / f"{s}{x}" for s in stems for x in FILE_SUFFIXES]
        shards = [p for s in stems for p in sorted(directory.glob(f"{s}-*.parquet"))]
        return [p for p in found if p.is_file()] + shards

    def _check_columns(self, records: list[dict], split: str, source: str) -> None:
        if not records:
            raise ValueError(f"task {self.name!r}: split {split!r} from {source} has no records")
        for i, record in enumerate(records):
            missing = [c for c in self.columns if c not in record]
            if missing:
                raise ValueError(
                    f"task {self.name!r}: split {split!r} from {source}: record {i} lacks "
                    f"column(s) {missing}; expected columns {list(self.columns)} "
                    f"(got {sorted(record)})"
                )
            if record.get("label", 0) == -1:
                raise ValueError(
                    f"task {self.name!r}: split {split!r} from {source} has unlabeled records "
                    "(label -1: test data?); only labeled train/validation data can be used"
                )

    # ---------------------------------------------------------------------------- examples
    def examples(
        self, split: str, data_dir: str | Path | None = None, *, train: bool | None = None
    ) -> list[Example]:
        """Loads and formats one split.

        Args:
            split: ``train_split`` or ``eval_split``.
            data_dir: See :meth:`load_records`.
            train: Apply train-time rules (ReCoRD one example per answer, WSC True only);
                defaults to ``split == train_split``.
        """
        if train is None:
            train = split == self.train_split
        records = self.load_records(split, data_dir)
        if self.select is not None:
            records = self.select(self, records)
        return self.format(records, train=train)

    def format(self, records: Sequence[Mapping[str, Any]], *, train: bool) -> list[Example]:
        """Formats hub-schema records into examples."""
        return [ex for record in records for ex in self.formatter(self, record, train)]

    # ----------------------------------------------------------------------------- scoring
    def score(self, predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        """Scores predicted target strings against examples; values on the 0-100 scale.

        Predictions that are not a valid answer (e.g. not a label string) count as wrong.
        """
        if len(predictions) != len(examples):
            raise ValueError(
                f"task {self.name!r}: {len(predictions)} predictions for {len(examples)} examples"
            )
        if not examples:
            raise ValueError(f"task {self.name!r}: nothing to score (no examples)")
        return self.metric(self, list(predictions), list(examples))

    def task_score(self, metrics: Mapping[str, float]) -> float:
        """The task's single score: mean of ``metric_names`` (CB: (F1 + accuracy) / 2)."""
        missing = [m for m in self.metric_names if m not in metrics]
        if missing:
            raise KeyError(
                f"task {self.name!r}: metrics {missing} missing from {sorted(metrics)}; "
                f"the task score averages {list(self.metric_names)}"
            )
        return sum(float(metrics[m]) for m in self.metric_names) / len(self.metric_names)


def read_rows(path: Path) -> list[dict]:
    """Reads a parquet, JSON-lines or JSON-array file into a list of dicts."""
    return [row for _, row in read_located_rows(path)]


def read_located_rows(path: Path) -> list[tuple[str, dict]]:
    """:func:`read_rows` with where each row lies: ``<path>:<line>`` in a JSON-lines file,
    ``<path> (record <i>)`` (from 1) in a parquet or JSON-array file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [(f"{path} (record {i})", row) for i, row in enumerate(rows, 1)]
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return [(f"{path} (record {i})", row) for i, row in enumerate(json.loads(text), 1)]
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"{path}:{line_no}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not a JSON line ({err.msg})") from err
    return rows


def check_text_fields(task: Task, record: Any, where: str) -> None:
    """Refuse a record whose text field (``task.text_fields``) holds no text: a null, a number,
    a bool. The field is looked for at every depth (``idx`` objects aside: they hold ids), so
    the official distribution's nested objects (MultiRC's questions, ReCoRD's ``qas``, WSC's
    ``target``) are checked too.

    Raises:
        ValueError: ``<file>:<line>: field 'passage.questions[0].question' is null ...``.
    """
    bad = _first_non_text(record, frozenset(task.text_fields), "")
    if bad is None:
        return
    field, value = bad
    what = "null" if value is None else f"{value!r} ({type(value).__name__})"
    raise ValueError(
        f"{where}: field {field!r} is {what}, not text; task {task.name!r} reads it as text: "
        "fix the record or drop it"
    )


def _first_non_text(value: Any, text_fields: frozenset[str], at: str) -> tuple[str, Any] | None:
    """(path, value) of the first text field below ``value`` that holds no text, or None."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "idx":  # ids (MultiRC's {"paragraph": 0, ...}), never text
                continue
            path = f"{at}.{key}" if at else str(key)
            if key in text_fields and not isinstance(item, str | Mapping | list):
                return path, item
            if key in text_fields and isinstance(item, list):
                for i, element in enumerate(item):
                    if not isinstance(element, str | Mapping):
                        return f"{path}[{i}]", element
            found = _first_non_text(item, text_fields, path)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_non_text(item, text_fields, f"{at}[{i}]")
            if found:
                return found
    return None


def class_id(task: Task, prediction: str) -> int:
    """The class id a predicted string names, or -1 (invalid, always wrong) if it is no label."""
    text = prediction.strip()
    return task.labels.index(text) if text in task.labels else -1


def classification_metric(
    task: Task, predictions: Sequence[str], examples: Sequence[Example]
) -> dict[str, float]:
    """Scores label strings against ``meta["label"]`` for every name in ``task.metric_names``.

    Understands ``accuracy``, ``f1_macro`` (mean over all classes) and ``f1`` (positive class 1).
    """
    gold = [int(ex.meta["label"]) for ex in examples]
    pred = [class_id(task, p) for p in predictions]
    known = {
        "accuracy": lambda: metrics.accuracy(gold, pred),
        "f1_macro": lambda: metrics.f1_macro(gold, pred, num_classes=len(task.labels)),
        "f1": lambda: metrics.f1_binary(gold, pred),
    }
    unknown = [m for m in task.metric_names if m not in known]
    if unknown:
        raise ValueError(
            f"task {task.name!r}: classification metrics {unknown} unknown; allowed: {list(known)}"
        )
    return {m: known[m]() for m in task.metric_names}


def label_id(task: Task, value: Any) -> int:
    """Maps a label of either schema to the hub's integer class id.

    The hub stores integers; the official distribution stores booleans (BoolQ, WiC, WSC) or
    the label string itself (CB, RTE). Missing labels (test data) become -1.
    """
    if value is None:
        return -1
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value in task.labels:
            return task.labels.index(value)
        if value.lower() in ("true", "false"):
            return int(value.lower() == "true")
    raise ValueError(
        f"task {task.name!r}: unknown label {value!r}; expected an int, a bool or one of "
        f"{list(task.labels)}"
    )


def data_dir_for(
    task: Task,
    data_dir: str | Path | None,
    cache_dir: str | Path,
    *,
    tasks: Sequence[str] = (),
) -> Path | None:
    """Where a run reads ``task``'s data: the user's ``data_dir`` (read, never written to), else
    a generated task's files under ``<cache_dir>/toy-data/<task>``, else None (the hub).

    Args:
        tasks: every task of the job (``task=superglue``: its 8). With several, one
            ``data_dir`` is shared by them: each reads only its own sub-directory
            (:func:`shared_data_dir`); alone, a task reads the top first.
    """
    if data_dir and len(tasks) > 1:
        return shared_data_dir(task, Path(data_dir).expanduser(), tasks)
    if data_dir:
        return Path(data_dir).expanduser()
    if task.generate is not None:
        return Path(cache_dir).expanduser() / "toy-data" / task.name
    return None


def default_cache_dir() -> Path:
    """The cache a config's ``paths.cache_dir`` defaults to: ``$REPRO_CACHE``, else
    ``~/.cache/repro`` (``conf/paths/default.yaml``)."""
    return Path(os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "repro").expanduser()


def generated_data_dir(task: Task, cache_dir: str | Path | None = None) -> Path:
    """A generated task's data directory, ``<cache_dir>/toy-data/<task>`` (default cache:
    :func:`default_cache_dir`), its files written there the first time."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return ensure_generated(task, root / "toy-data" / task.name)


def ensure_generated(task: Task, directory: Path) -> Path:
    """Generate ``task``'s data into ``directory`` once; concurrent jobs race safely (each
    writes a directory of its own beside it and renames it into place; the first wins)."""
    return build_once(directory, task.generate, marker="validation.jsonl")


def shared_data_dir(task: Task, data_dir: Path, tasks: Sequence[str]) -> Path:
    """``task``'s own sub-directory of a ``data_dir`` shared by the job's ``tasks``.

    A split file at the top of ``data_dir`` could be any of the tasks' data (every task would
    read it): refused, as is a ``data_dir`` without a sub-directory for ``task``.
    """
    if not data_dir.is_dir():
        raise ValueError(f"task {task.name!r}: data_dir {str(data_dir)!r} is not a directory")
    top = task.split_files_in(data_dir)
    if top:
        raise ValueError(
            f"task.data_dir={data_dir} holds {top[0].name} at its top, which could be the data "
            f"of any of the job's {len(tasks)} tasks ({', '.join(tasks)}); put each task's "
            f"files in its own sub-directory ({data_dir}/<task>/) or run one task at a time"
        )
    own = task.own_sub_dirs(data_dir)
    if not own:
        names = sorted({task.name, *task.dir_names})
        raise ValueError(
            f"task {task.name!r}: task.data_dir={data_dir} has no sub-directory for it (looked "
            f"for {names}); a job of several tasks reads each task's files from its own"
        )
    return own[0]
