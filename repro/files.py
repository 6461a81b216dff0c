"""Files a killed process never leaves half written: atomic files and directories, and the crash
injection that proves it.

- **Atomic files.** JSON and text files are written aside, fsynced and renamed
  (:func:`write_json_atomic`, :func:`write_text_atomic`, :func:`write_bytes_atomic`); a write
  that fails (a full disk) removes what it wrote aside, and a kill before the rename leaves
  ``.<name>.tmp``, which a run removes once it succeeds (``repro.rundir.clear_error``).
- **Named outputs.** A command that writes an output the user names refuses one that exists
  unless ``--overwrite`` (:func:`refuse_existing`).
- **Atomic directories** (a run's ``last/``, ``best/``): written complete into ``.<name>.tmp/``
  (with a ``COMPLETE`` marker), then swapped in (:func:`publish_dir`); :func:`recover_dir`
  repairs whatever a kill between any two of those file operations left, so the next launch
  resumes. :func:`build_once` builds a shared directory (the tiny model, a generated task's data)
  once, whichever of several concurrent jobs gets there first. Both give what they write the
  modes a plain ``mkdir``/``open`` gives under the user's umask (:func:`usual_modes`), whatever
  the writer did: safetensors writes owner-only (0600) files.

Crash injection: :func:`fault_point` marks each gap between two file operations; with
``REPRO_KILL_AT=<point>[:<n>]`` in the environment the process SIGKILLs itself at the n-th
(default first) time it reaches that point. ``tests/test_crash.py`` kills a job at every point
and checks that the relaunch ends exactly as an uninterrupted run.

What these files mean inside a run directory is ``repro.rundir``'s story.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

COMPLETE = "COMPLETE"


# --- crash injection -------------------------------------------------------------------------

_FAULT_HITS: dict[str, int] = {}
KILL_ENV = "REPRO_KILL_AT"


def fault_point(name: str) -> None:
    """A gap between two file operations: SIGKILL here if ``REPRO_KILL_AT`` names it."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, _, nth = wanted.rpartition(":")  # point names hold ": " themselves
    if not nth.isdigit():
        point, nth = wanted, "1"
    if point != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


# --- atomic files ----------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: non-finite floats as text, paths as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the information as text
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Readers (and a killed writer) see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk, say: the old file stays, and nothing beside it
        tmp.unlink(missing_ok=True)
        raise
    fault_point(f"write {path.name}")
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    write_bytes_atomic(path, json.dumps(jsonable(data), indent=2).encode())


def refuse_existing(outputs: Iterable[str | os.PathLike], overwrite: bool) -> None:
    """The one rule of every command that writes a named output (``repro.collect -o``,
    ``repro.ensemble -o``, ``repro.export``, ...): an output that exists already is refused
    before anything is computed, unless ``--overwrite`` (then it is replaced atomically).

    Raises:
        FileExistsError: naming the first existing output (a user error: one line, exit 2).
    """
    if overwrite:
        return
    taken = [Path(p) for p in outputs if Path(p).exists()]
    if taken:
        more = f" (and {len(taken) - 1} more of its outputs)" if len(taken) > 1 else ""
        raise FileExistsError(
            f"{taken[0]}{more} already exists; choose another output or pass --overwrite to "
            "replace it"
        )


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# --- atomic directories ----------------------------------------------------------------------


def usual_modes(directory: Path) -> None:
    """Give everything under ``directory`` the modes a plain ``mkdir``/``open`` gives under the
    umask: its sub-directories ``directory``'s own mode (made by ``mkdir``, so e.g. 0755 under
    umask 022), its files that mode's read/write bits (0644), an executable file its execute
    bits too. Symbolic links are left alone."""
    mode = directory.stat().st_mode & 0o777
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            if os.path.isdir(path):
                os.chmod(path, mode)
            else:
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, mode & (0o777 if executable else 0o666))


def staging_path(target: Path) -> Path:
    """Where :func:`publish_dir` writes ``target`` before swapping it in."""
    return target.with_name(f".{target.name}.tmp")


def aside_path(target: Path) -> Path:
    """Where :func:`publish_dir` moves the old ``target`` while it swaps the new one in."""
    return target.with_name(f".{target.name}.old")


def recover_dir(target: Path) -> None:
    """Repair what a kill during :func:`publish_dir` left, so that ``target`` is whole or absent.

    ``target`` only ever appears by renaming a complete staging directory, so if it exists it is
    whole, and leftovers beside it are dropped. If it is missing, the newest whole copy takes
    its place: the staging directory if it was completed, else the one moved aside.
    """
    staging, aside = staging_path(target), aside_path(target)
    if target.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
        fault_point(f"recover {target.name}: aside removed")
        shutil.rmtree(staging, ignore_errors=True)
        return
    if (staging / COMPLETE).exists():
        staging.rename(target)
        fault_point(f"recover {target.name}: staging promoted")
        shutil.rmtree(aside, ignore_errors=True)
        (target / COMPLETE).unlink(missing_ok=True)
    elif aside.is_dir():
        aside.rename(target)
        fault_point(f"recover {target.name}: aside restored")
        shutil.rmtree(staging, ignore_errors=True)
    else:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(target: Path, write: Callable[[Path], Any]) -> None:
    """Replace directory ``target`` by what ``write(staging)`` writes, crash-safely.

    Steps, each followed by a fault point: write everything into ``.<target>.tmp/`` and mark
    it ``COMPLETE``; drop a stale ``.<target>.old/``; move ``target`` aside; rename staging to
    ``target``; drop the copy moved aside. A kill between any two leaves a state
    :func:`recover_dir` turns into a whole ``target`` (the old one or the new one).
    """
    recover_dir(target)  # a previous kill may have left the only whole copy in staging
    staging, aside = staging_path(target), aside_path(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    usual_modes(staging)
    fault_point(f"publish {target.name}: files written")
    for file in staging.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    with open(staging / COMPLETE, "w") as f:
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(staging)
    fault_point(f"publish {target.name}: staged")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)
        fault_point(f"publish {target.name}: moved aside")
    staging.rename(target)
    _fsync_dir(target.parent)
    fault_point(f"publish {target.name}: swapped")
    shutil.rmtree(aside, ignore_errors=True)
    (target / COMPLETE).unlink(missing_ok=True)  # the marker only means something in staging


def build_once(target: Path, build: Callable[[Path], Any], marker: str) -> Path:
    """Build directory ``target`` once (it counts as built when it holds ``marker``):
    concurrent jobs race safely, each building a directory of its own beside it and renaming
    it into place. The builders are seeded, so whichever job wins, the files are the same."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # a directory of this job's own (not tempfile.mkdtemp's, which is owner-only: 0700)
    staging = target.parent / f".{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        build(staging)
        usual_modes(staging)
        with contextlib.suppress(OSError):  # another job got there first: keep its files
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
