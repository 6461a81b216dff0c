"""Task registry: name -> :class:`Task`, and mixtures: name -> several task names.

``task=superglue`` on the command line means the 8 names in :data:`SUPERGLUE` (one prompt each,
or one mixture for ``method=model_multitask``); :func:`task_names` expands it, and any other
mixture in :data:`MIXTURES` the same way; :func:`superglue_score` averages the 8 task scores.
"""

from __future__ import annotations

from collections.abc import Mapping

from repro.plugins import load_plugins
from repro.tasks.base import Example, Task
from repro.tasks.glue import GLUE_TASKS
from repro.tasks.superglue import SUPERGLUE_TASKS
from repro.tasks.toy import TOY_TASKS
from repro.tasks.transfer import TRANSFER_TASKS, map_labels

__all__ = [
    "MIXTURES",
    "SUPERGLUE",
    "TASKS",
    "Example",
    "Task",
    "get_task",
    "map_labels",
    "register_mixture",
    "register_task",
    "superglue_score",
    "task_names",
]

TASKS: dict[str, Task] = {}
SUPERGLUE: tuple[str, ...] = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")
# A name that stands for several tasks: `task=<name>` runs each (or, for a method that trains a
# mixture, all at once). The core's toy tasks give the smoke runs one of two tasks.
MIXTURES: dict[str, tuple[str, ...]] = {
    "superglue": SUPERGLUE,
    "toy_smoke": ("toy_keyword", "toy_polarity"),
}


def register_task(task: Task) -> None:
    """Adds a task to :data:`TASKS`; a different task under a taken name is an error."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects a Task, got {type(task).__name__}")
    existing = TASKS.get(task.name)
    if existing is not None and existing is not task:
        raise ValueError(f"a different task is already registered as {task.name!r}")
    TASKS[task.name] = task


def get_task(name: str) -> Task:
    """The registered task called ``name``; ValueError listing the allowed names otherwise.

    A name the core does not hold loads the installed plugins first (``repro.plugins``: the toy
    world registers ``toy_review`` and ``toy_fact`` that way)."""
    if name not in TASKS:
        load_plugins()
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; allowed: {sorted(TASKS)}") from None


def register_mixture(name: str, names: tuple[str, ...]) -> None:
    """Adds a mixture (a name standing for several registered tasks) to :data:`MIXTURES`."""
    for task in names:
        get_task(task)
    existing = MIXTURES.get(name)
    if name in TASKS or (existing is not None and existing != tuple(names)):
        raise ValueError(f"{name!r} is already a task or another mixture")
    MIXTURES[name] = tuple(names)


def task_names(name: str) -> tuple[str, ...]:
    """Expands a mixture (``"superglue"``: its 8 tasks); any other registered name stands for
    itself."""
    if name not in MIXTURES and name not in TASKS:
        load_plugins()
    if name in MIXTURES:
        return MIXTURES[name]
    try:
        return (get_task(name).name,)
    except ValueError:
        raise ValueError(
            f"unknown task {name!r}; allowed: {sorted(TASKS)} or a mixture: {sorted(MIXTURES)}"
        ) from None


def superglue_score(task_scores: Mapping[str, float | Mapping[str, float]]) -> float:
    """The SuperGLUE score: mean over the 8 tasks of each task's score.

    Args:
        task_scores: Task name -> its single score (multi-metric tasks already averaged, e.g.
            CB (F1 + accuracy) / 2), or -> its metrics dict, averaged here via the task's
            ``metric_names``. All 8 SuperGLUE tasks and nothing else must be present, so a
            partial average is never reported as a SuperGLUE score.
    """
    missing = [t for t in SUPERGLUE if t not in task_scores]
    extra = [t for t in task_scores if t not in SUPERGLUE]
    if missing or extra:
        raise ValueError(
            f"superglue_score needs exactly the tasks {list(SUPERGLUE)}; "
            f"missing {missing}, unexpected {extra}"
        )
    scores = [
        get_task(t).task_score(v) if isinstance(v, Mapping) else float(v)
        for t, v in task_scores.items()
    ]
    return sum(scores) / len(scores)


for _task in (*SUPERGLUE_TASKS, *TRANSFER_TASKS, *GLUE_TASKS, *TOY_TASKS):
    register_task(_task)
