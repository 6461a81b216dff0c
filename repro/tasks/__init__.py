"""Task registry: name -> :class:`Task`.

``task=superglue`` on the command line means the 8 names in :data:`SUPERGLUE`, one prompt each;
:func:`task_names` expands it.
"""

from __future__ import annotations

from repro.tasks.base import Example, Task
from repro.tasks.glue import GLUE_TASKS
from repro.tasks.superglue import SUPERGLUE_TASKS
from repro.tasks.toy import TOY_TASKS
from repro.tasks.transfer import TRANSFER_TASKS, map_labels

__all__ = [
    "SUPERGLUE",
    "TASKS",
    "Example",
    "Task",
    "get_task",
    "map_labels",
    "register_task",
    "task_names",
]

TASKS: dict[str, Task] = {}
SUPERGLUE: tuple[str, ...] = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")


def register_task(task: Task) -> None:
    """Adds a task to :data:`TASKS`; a different task under a taken name is an error."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects a Task, got {type(task).__name__}")
    existing = TASKS.get(task.name)
    if existing is not None and existing is not task:
        raise ValueError(f"a different task is already registered as {task.name!r}")
    TASKS[task.name] = task


def get_task(name: str) -> Task:
    """The registered task called ``name``; ValueError listing the allowed names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; allowed: {sorted(TASKS)}") from None


def task_names(name: str) -> tuple[str, ...]:
    """Expands ``"superglue"`` to its 8 tasks; any other registered name stands for itself."""
    if name == "superglue":
        return SUPERGLUE
    return (get_task(name).name,)


for _task in (*SUPERGLUE_TASKS, *TRANSFER_TASKS, *GLUE_TASKS, *TOY_TASKS):
    register_task(_task)
