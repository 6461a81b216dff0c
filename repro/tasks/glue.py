"""GLUE SST-2, in the official code's format, so every prompt it released has its task.

The official repository trained its released SST-2 prompt on ``taskless_glue_sst2_v200``
(prompt_tuning/data/glue.py): T5's GLUE preprocessor (``sst2 sentence: …`` → ``negative`` /
``positive``, TFDS ``glue/sst2`` label names) with the leading task-name word removed, i.e.
``sentence: …``. Scored by accuracy (T5's GLUE metric for SST-2). Data: ``nyu-mll/glue``
``sst2`` (the same sentences and labels as TFDS), or a local directory in that schema
(``train`` / ``validation`` as parquet or JSON lines with ``sentence``, ``label``, ``idx``).
QQP and MRPC, the paper's paraphrase-transfer pair, live in :mod:`repro.tasks.transfer`.
"""

from __future__ import annotations

from repro.tasks.base import Task, classification_metric
from repro.tasks.superglue import classification_formatter, normalise_flat

SST2 = Task(
    name="sst2",
    hub_id="nyu-mll/glue",
    hub_config="sst2",
    labels=("negative", "positive"),
    init_words=(),
    metric_names=("accuracy",),
    formatter=classification_formatter(("sentence",)),
    metric=classification_metric,
    columns=("sentence", "label"),
    normaliser=normalise_flat,
    text_fields=("sentence",),
    dir_names=("sst2", "sst-2"),
)

GLUE_TASKS: tuple[Task, ...] = (SST2,)
