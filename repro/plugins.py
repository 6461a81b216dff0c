"""Extensions plugged in from above, found by name instead of imported by the core.

A package that adds tasks (or anything else that registers itself with a registry of the core)
declares an entry point in the ``repro.plugins`` group; the registries call
:func:`load_plugins` the first time they are asked for a name they do not hold, so the core
never imports its extensions, and an extension is there wherever it is asked for. The suite's
own toy world is one (``pyproject.toml``)::

    [project.entry-points."repro.plugins"]
    toyworld = "repro.toyworld"
"""

from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "repro.plugins"
_loaded = False


def load_plugins() -> None:
    """Import every installed ``repro.plugins`` entry point, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry_point in entry_points(group=GROUP):
        entry_point.load()
