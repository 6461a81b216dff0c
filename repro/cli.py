"""How a user's mistake is worded and reaches the terminal: one ``error:`` line, no traceback.

A bad config value is worded the same way by every check (:func:`check_choice`,
:func:`check_positive_int`); :class:`RunError` is a mistake in the user's input that is no single
value (a checkpoint that is not there, a run directory made by another config). The entry points
(``repro.run``, ``repro.cost``, ``repro.collect``, ``repro.plots``) share :func:`cli_error_message`:
an exception that is the user's to fix (a bad override, value or path) becomes its first line;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from omegaconf.errors import OmegaConfBaseException


class RunError(Exception):
    """A problem with the user's input, reported as one line (no traceback)."""


# What a user can get wrong: reported as one line, no traceback. Anything else is a bug.
USER_ERRORS = (RunError, ValueError, KeyError, OSError, OmegaConfBaseException)


def cli_error_message(err: BaseException) -> str | None:
    """One line for a user's mistake (bad override, value, path, ...); None for anything else."""
    from hydra.errors import HydraException, MissingConfigException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = sorted(o for o in (err.options or []) if o != "schema")
        if group and options:
            return f"{group}={option!r} is not allowed; choose one of: {', '.join(options)}"
    if not isinstance(err, (HydraException, *USER_ERRORS)):
        return None
    from hydra.errors import OverrideParseException

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:  # not the temp file's own name
        name = err.filename
        where = os.path.dirname(os.fsdecode(name)) if name is not None else "the output"
        return f"no space left on the device of {where}; free some space and run the command again"
    first = first_line(err)
    if isinstance(err, OverrideParseException):
        return f"cannot parse the overrides: {first}"
    cause = err.__cause__ or err.__context__
    if isinstance(err, HydraException) and cause is not None and first_line(cause) not in first:
        first = f"{first.rstrip('.')}: {first_line(cause)}"
    return first


def first_line(err: object) -> str:
    """The first non-empty line of an error (or any text), stripped; the type name if none."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[0] if lines else type(err).__name__


def check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` of the config key ``what`` unless it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{what}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def check_positive_int(what: str, value: Any, minimum: int = 1) -> None:
    """Refuse ``value`` of the config key ``what`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")
