"""How a user's mistake is worded and reaches the terminal: one ``error:`` line, no traceback.

A bad config value is worded the same way by every check (:func:`check_choice`,
:func:`check_positive_int`); :class:`RunError` is a mistake in the user's input that is no single
value (a checkpoint that is not there, a run directory made by another config). The entry points
(``repro.run``, ``repro.cost``, ``repro.collect``, ``repro.plots``) share :func:`cli_error_message`:
an exception that is the user's to fix (a bad override, value or path) becomes its first line;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from repro.methods import LORA_KEYS


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
            return (
                f"{group}={option!r} is not allowed; choose one of: {', '.join(options)}"
                f"{did_you_mean(option, options)}"
            )
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
    return _other_methods_key(err) or first + _unknown_key_hint(err)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'prompt_len'?"`` for the candidate closest to a mistyped ``word``
    (difflib's ratio >= 0.6), else ``""``."""
    others = [str(c) for c in candidates if str(c) != word]
    close = difflib.get_close_matches(str(word), others, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _key_error(err: BaseException | None) -> OmegaConfBaseException | None:
    """The OmegaConf error behind ``err`` that names a key missing from a config node."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        key, parent = getattr(err, "key", None), getattr(err, "parent_node", None)
        if isinstance(err, OmegaConfBaseException) and isinstance(key, str) and parent is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def _other_methods_key(err: BaseException) -> str | None:
    """``method.r=4`` on a run whose method has no such key (only LoRA's schema holds it)."""
    found = _key_error(err)
    if found is None or str(getattr(found, "full_key", "")) != f"method.{found.key}":
        return None
    method = found.parent_node.get("name") if hasattr(found.parent_node, "get") else None
    if found.key not in LORA_KEYS or method in (None, "lora"):
        return None
    return f"method.{found.key} only applies to method=lora; method={method} trains no LoRA adapter"


def _unknown_key_hint(err: BaseException) -> str:
    """The did-you-mean of a key the config does not hold (``trainer.stpes=3``): the closest of
    the keys at its level, as Hydra composed them (OmegaConf's error names its parent node)."""
    found = _key_error(err)
    if found is None:
        return ""
    key = found.key
    try:
        keys = list(map(str, found.parent_node.keys()))
    except (AttributeError, TypeError, OmegaConfBaseException):
        return ""
    if key in keys:
        return ""
    full = str(getattr(found, "full_key", None) or key)
    prefix = full[: -len(key)] if full.endswith(key) else ""  # "trainer." of trainer.stpes
    hint = did_you_mean(key, (k for k in keys if k != "hydra"))
    return hint.replace("mean '", f"mean '{prefix}", 1)


def first_line(err: object) -> str:
    """The first non-empty line of an error (or any text), stripped; the type name if none."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[0] if lines else type(err).__name__


def check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` of the config key ``what`` unless it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(
            f"{what}={value!r} is not allowed; choose one of: {', '.join(allowed)}"
            f"{did_you_mean(str(value), allowed)}"
        )


def check_positive_int(what: str, value: Any, minimum: int = 1) -> None:
    """Refuse ``value`` of the config key ``what`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")
