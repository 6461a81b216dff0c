"""The run directory as a crash-proof unit: identity, lock, atomic writes, claim and resume.

One job = one directory (named from the axes, ``conf/config.yaml: name``). What lies in it::

    .lock              held (flock) by the process running the job; says who holds it
    fingerprint.json   the config minus what does not change the result: the run's identity
    config.yaml        the resolved config;  .hydra/  Hydra's record of the command
    metrics.jsonl      one JSON line per log/eval, each a single append-mode write
    best/  last/       the best prompt; the full training state (prompt, optimizer, RNG, step)
    result.json        written last (summary.json for a multi-task job); error.txt on failure

The rules, and what a kill at any moment leaves:

- **Lock.** A job takes an exclusive ``flock`` on ``.lock`` before it reads or writes anything
  of the run; a second launch of the same run refuses at once, naming the holder (pid, host,
  start time). The kernel drops the lock when the holder dies, even by SIGKILL.
- **Identity.** ``fingerprint.json`` holds what decides the result, never where files lie:
  data given by ``task.data_dir`` enter as the SHA-256 of the files read, and paths under the
  cache or the package are written relative to them, so moving a results tree or
  ``REPRO_CACHE`` keeps a finished run the same run. A directory holding another fingerprint is
  refused, naming the keys that differ.
- **Claim.** The fingerprint, ``config.yaml`` and ``.hydra/`` are written only once the job can
  start (config valid, backbone and tokenizer loaded), and taken back if the job fails before
  its first training step, so the corrected command is not refused. A refused launch writes
  nothing at all.
- **Atomic files and directories** (``result.json``, ``last/``, ``best/``): written aside and
  renamed, so a kill at any moment leaves the old or the new one (``repro.files``, which also
  holds the crash injection ``tests/test_crash.py`` uses).
- **Metrics.** A resumed run first drops the lines past its checkpoint's step.
- **Read-only.** A directory nothing can be written to (a read-only mount) needs no lock: a
  finished run there is read and skipped; anything else is refused in one line naming it
  (:func:`check_writable`). The run's ``run.log`` (Hydra's job log) opens at its first line and
  is left out where it cannot be written (:class:`RunLog`), so the job can say so itself.
- **Leftovers.** A run that succeeds removes the ``.<name>.tmp`` files of writes that failed
  (disk full) or were killed before their rename, with any ``error.txt`` (:func:`clear_error`).
  A launch that ends without a claim (a missing dataset, a checkpoint that does not load, a
  value refused once the directory was locked) leaves no ``.lock``, and a directory holding
  nothing else but its ``run.log`` is removed: when the job's log closes (the job's end, or the
  process's: :func:`leave_nothing_unclaimed`), so a sweep's failed job keeps only the record
  ``repro.run`` writes of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from repro.checkpoints import own_replaces_release
from repro.cli import RunError
from repro.config import SEPARATOR, LoraMethodConfig
from repro.files import aside_path, read_json, staging_path, write_json_atomic, write_text_atomic
from repro.methods import DEFAULT_METHOD, LORA_KEYS, get_method
from repro.tasks import get_task
from repro.tasks import task_names as expand
from repro.tasks.base import data_dir_for
from repro.trainer_config import with_precision

FINGERPRINT = "fingerprint.json"
CONFIG = "config.yaml"
RESULT = "result.json"
SUMMARY = "summary.json"
ERROR = "error.txt"
LOCK = ".lock"
HYDRA = ".hydra"
METRICS = "metrics.jsonl"

# Keys that do not change what a run computes: a finished run with only these different is
# the same run (a relaunched sweep skips it).
NON_RESULT_KEYS = ("logger", "paths", "sweep_name", "name", "dry_run", "cost")
NON_RESULT_TRAINER_KEYS = ("progress", "stop_after_steps")
# Model keys that only describe the checkpoint's shape or where/how it runs, not what it computes.
NON_RESULT_MODEL_KEYS = (
    "gradient_checkpointing",
    "fused_gelu",  # the same function as transformers' gelu_new, to ~2e-7
    "device_map",
    "num_layers",
    "num_heads",
    "d_kv",
    "d_ff",
    "vocab_size",
    "trust_remote_code",
    "num_kv_heads",
    "gated_mlp",
    # the checkpoint's own family is what a run loads (a mismatch is refused); the key only
    # says what a dry run prices
    "family",
)


class RunDirError(RunError):
    """A run directory that cannot be used as asked (another config, in use): one line."""


# --- naming ----------------------------------------------------------------------------------


def _steps_label(steps: int) -> str:
    """100000 → "100k"; a count that is not whole thousands stays exact (50 → "50")."""
    return f"{steps // 1000}k" if steps and steps % 1000 == 0 else str(steps)


def run_name(
    task,
    size,
    objective,
    lm_adapt_steps,
    prompt_len,
    init,
    seed,
    lm_adapt_source="auto",
    method=DEFAULT_METHOD,
    model_steps=None,
) -> str:
    """The default directory name of a job, from its axes (``conf/config.yaml: name``).

    ``model_steps``: the model's own ``lm_adapt_checkpoint_steps``; a causal LM loaded at
    another pre-training step (``objective=next_token lm_adapt_steps=N``, Pythia's ``step<N>``)
    is named ``next_token_step<N>``, so that each step has its directory."""
    steps = _steps_label(int(lm_adapt_steps)) if objective == "lm_adapt" else None
    if steps and own_replaces_release(objective, lm_adapt_steps, lm_adapt_source):
        steps += "_own"  # never the directory of a run on the released checkpoint
    other_step = model_steps is not None and int(lm_adapt_steps) != int(model_steps)
    if objective == "next_token" and other_step:
        steps = f"_step{int(lm_adapt_steps)}"
    objective = f"{objective}{steps}" if steps else objective
    return f"{task}-{size}-{objective}-{method_part(method, prompt_len, init)}-s{seed}"


def method_part(method, prompt_len, init) -> str:
    """The method's part of a run name: ``p<prompt_len>-<init>`` for prompt tuning (the names
    runs had before the method axis existed), the method's name for the others (no prompt).

    ``method`` is the config's ``method`` node (or its name alone). A LoRA run adds each LoRA
    key that differs from its default, so a sweep over them gets a directory per setting:
    ``lora`` (r 8, alpha 16, dropout 0, q and v), ``lora_r4``, ``lora_r16_a32_qkvo``."""
    name = str(method.get("name") if isinstance(method, Mapping) else method)
    if get_method(name).prompt_axes:
        return f"p{prompt_len}-{init}"
    if name != "lora" or not isinstance(method, Mapping):
        return name
    return name + "".join(f"_{part}" for part in _lora_name_parts(method))


def _lora_name_parts(method: Mapping) -> list[str]:
    default = LoraMethodConfig()
    parts = []
    for key, short in (("r", "r"), ("alpha", "a"), ("dropout", "d")):
        value = method.get(key, getattr(default, key))
        if value != getattr(default, key):
            parts.append(f"{short}{value:g}")
    targets = list(method.get("target_modules", default.target_modules))
    if targets != default.target_modules:
        parts.append("".join(targets) if all(len(t) == 1 for t in targets) else "-".join(targets))
    return parts


# conf/config.yaml names every run `${run_name:...}` (conf/experiment/toy.yaml uses
# `${method_part:...}`): whoever composes the config (repro.run, repro.cost, the tests) imports
# this module first.
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
OmegaConf.register_new_resolver("method_part", method_part, replace=True)


# --- lock ------------------------------------------------------------------------------------


# What opening a file for writing raises where nothing may be written.
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[bool]:
    """Hold the run directory's lock while inside; refuse at once if another process holds it.
    Yields whether the directory can be written: a read-only one (a read-only mount, or no write
    permission) cannot change under us, so it is not locked, and the caller may only read it
    (:func:`check_writable`).

    ``flock`` locks belong to the open file: the kernel releases them when the holder exits or
    is killed, so a stale lock never blocks a relaunch. (Local and most cluster filesystems
    honour ``flock``; on an NFS mount without lock support, two launches are not detected.)
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield True
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not os.access(run_dir, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(run_dir))
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno not in READ_ONLY_ERRNOS:
            raise
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise RunDirError(
                f"{run_dir} is in use by {holder}; wait for it to end or stop it "
                "(two launches of one run would write over each other)"
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}".encode(), 0)
        yield True
    finally:
        os.close(fd)  # closing the file drops the lock


def check_writable(run_dir: Path, writable: bool, status: str) -> None:
    """Refuse a run that would write into a read-only ``run_dir`` (``writable`` from
    :func:`locked`; ``status`` from :func:`status_of`, anything but ``"finished"``)."""
    if writable:
        return
    what = "holds an unfinished run" if status == "resume" else "holds no run yet"
    raise RunDirError(
        f"{run_dir} is read-only and {what}: a run needs to write there (only a finished run "
        "is skipped without writing); make it writable or choose another paths.root"
    )


class RunLog(logging.FileHandler):
    """The run's ``run.log`` (Hydra's job log, ``conf/config.yaml``): opened at its first line,
    and left out, the terminal keeping every line, when it cannot be opened (a read-only run
    directory), instead of failing while Hydra configures logging ("Unable to configure handler
    'file'"), before the job could skip a finished run or say what is wrong."""

    def __init__(self, filename, mode="a", encoding=None, delay=True, errors=None):
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        self.unwritable = False

    def close(self) -> None:
        """Close the log; the job is over: a directory it never claimed keeps nothing of it
        (:func:`leave_nothing_unclaimed`)."""
        super().close()
        if self.baseFilename:
            leave_nothing_unclaimed(Path(self.baseFilename).parent, Path(self.baseFilename).name)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            if self.unwritable:
                return
            try:
                self.stream = self._open()
            except OSError as err:
                self.unwritable = True
                if err.errno not in READ_ONLY_ERRNOS:  # said once, as logging says its errors
                    self.handleError(record)
                return
        super().emit(record)


# --- identity --------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_identity(cfg, task_names) -> dict[str, dict[str, str]] | None:
    """What the run's data are, not where they lie: per task and split, the SHA-256 of the file
    read from ``task.data_dir`` (None: the hub's data, named by the task itself)."""
    if not cfg.task.data_dir:
        return None
    identity = {}
    for name in task_names:
        task = get_task(name)
        # the directory the job reads: a task's own sub-directory when several share data_dir
        root = data_dir_for(task, cfg.task.data_dir, cfg.paths.cache_dir, tasks=task_names)
        identity[name] = {
            split: _file_sha256(task.find_split_file(split, root)) for split in task.splits
        }
    return identity


def _relative_paths(value: Any, roots: Mapping[str, str]) -> Any:
    """Strings under one of ``roots`` (cache dir, package dir) written relative to it."""
    if isinstance(value, dict):
        return {k: _relative_paths(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v, roots) for v in value]
    if isinstance(value, str):
        for label, root in roots.items():
            if value == root or value.startswith(root.rstrip("/") + "/"):
                return f"${{{label}}}{value[len(root.rstrip('/')) :]}"
    return value


def fingerprint(cfg, task_names=None, precision: str | None = None) -> dict[str, Any]:
    """The parts of the config that decide the result, with data and paths made portable.

    Args:
        precision: the precision the run computes in on this machine
            (:func:`repro.job.task.run_precision`): ``trainer.precision=auto`` is bf16 on one
            GPU and fp32 on another, which give different numbers. None: as the config asks
            (enough to compare the jobs of one sweep).
    """
    plain = dataclasses.asdict(cfg)
    if precision is not None:
        plain["trainer"]["precision"] = precision
    for key in NON_RESULT_KEYS:
        plain.pop(key, None)
    if not own_replaces_release(cfg.objective.name, cfg.lm_adapt_steps, cfg.lm_adapt_source):
        # Both choices load the same backbone here; and run dirs made before the key existed
        # (all of them `auto`) keep matching their fingerprint.
        plain.pop("lm_adapt_source", None)
    if cfg.method.name == DEFAULT_METHOD:
        plain.pop("method", None)  # run dirs made before the method axis keep their fingerprint
    elif cfg.method.name != "lora":  # the LoRA keys mean nothing to the other methods
        for key in LORA_KEYS:
            plain["method"].pop(key, None)
    if not cfg.trainer.optimizer.parameter_scale:  # as above, for the keys it brought
        for key in ("parameter_scale", "eps2"):
            plain["trainer"]["optimizer"].pop(key, None)
    for key in NON_RESULT_TRAINER_KEYS:
        plain["trainer"].pop(key, None)
    if cfg.trainer.batch_tokens is None:  # a batch of batch_size examples, as before the key
        plain["trainer"].pop("batch_tokens", None)
    for key in NON_RESULT_MODEL_KEYS:
        plain["model"].pop(key, None)
    # decoder-only keys appear only where they differ from their default (a T5 run's
    # fingerprint is as before them); the checkpoint loaded is in `checkpoints` already
    if cfg.model.positions == "peft":
        plain["model"].pop("positions", None)
    if cfg.model.steps_checkpoint is None:
        plain["model"].pop("steps_checkpoint", None)
    if cfg.model.separator == SEPARATOR:
        plain["model"].pop("separator", None)
    plain["task"]["data_dir"] = data_identity(cfg, task_names or expand(cfg.task.name))
    # init keys newer than most run dirs appear only where they apply, so that those dirs keep
    # matching; a given prompt is named by what it holds, not where it lies
    init = plain["init"]
    for key in ("path", "text"):
        if init.get(key) is None:
            init.pop(key, None)
    if cfg.init.name != "text":
        init.pop("text_rule", None)
    if cfg.init.scale == "fixed":
        init.pop("scale", None)
    if cfg.init.path:
        from repro.interop import prompt_identity  # late: interop loads torch, which the cost
        # report and the Hydra plugins (they import this module) never need

        init["path"] = prompt_identity(cfg.init.path)
    roots = {
        "cache": str(Path(cfg.paths.cache_dir).expanduser()),
        "lm_adapt_dir": str(Path(cfg.paths.lm_adapt_dir).expanduser()),
        "repro": str(Path(__file__).resolve().parent),
    }
    return _relative_paths(plain, roots)


def diff_keys(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


# --- claim and resume ------------------------------------------------------------------------


def status_of(run_dir: Path, mine: Mapping[str, Any]) -> str:
    """``"new"`` (unclaimed), ``"finished"`` (this run, done: skip it) or ``"resume"``.

    Raises:
        RunDirError: the directory holds a run of another config, naming the keys that differ.
    """
    saved = read_json(run_dir / FINGERPRINT)
    if saved is None:
        return "new"
    saved = _upgraded(saved)
    if saved != mine:
        raise RunDirError(
            f"{run_dir} already holds a run of a different config (differs in: "
            f"{', '.join(sorted(diff_keys(saved, mine)))}); choose another directory with name=... or "
            "delete it"
        )
    summary = read_json(run_dir / SUMMARY) or read_json(run_dir / RESULT) or {}
    return "finished" if summary.get("status") == "finished" else "resume"


def _upgraded(saved: Any) -> Any:
    """A fingerprint written before ``trainer.precision``, in today's words."""
    if isinstance(saved, dict) and isinstance(saved.get("trainer"), dict):
        saved = {**saved, "trainer": with_precision(saved["trainer"])}
    return saved


def claim(run_dir: Path, fp: Mapping[str, Any], config_yaml: str, hydra_files=None) -> None:
    """Make the directory this run's: Hydra's record, the config, then the fingerprint."""
    for name, text in (hydra_files or {}).items():
        (run_dir / HYDRA).mkdir(exist_ok=True)
        write_text_atomic(run_dir / HYDRA / name, text)
    write_text_atomic(run_dir / CONFIG, config_yaml)
    write_json_atomic(run_dir / FINGERPRINT, fp)


def holds_progress(run_dir: Path) -> bool:
    """Whether any task of the job left something of its training: a metrics line or a
    checkpoint (``last/``, or the pieces of one a kill left)."""
    for directory in (run_dir, *(d for d in run_dir.iterdir() if d.is_dir())):
        last = directory / "last"
        if any(d.exists() for d in (last, staging_path(last), aside_path(last))):
            return True
        metrics = directory / METRICS
        if metrics.exists() and metrics.stat().st_size > 0:
            return True
    return False


def release_if_unstarted(run_dir: Path) -> bool:
    """Take the claim back from a job that failed before its first step; True if released."""
    if holds_progress(run_dir):
        return False
    for name in (FINGERPRINT, CONFIG):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / HYDRA, ignore_errors=True)
    return True


def leave_nothing_unclaimed(run_dir: Path, log_name: str = "run.log") -> bool:
    """What a launch that never claimed ``run_dir`` leaves there: nothing. Its ``.lock`` goes,
    and if the directory then holds nothing but its log (``log_name``), both go with it; True if
    the directory was removed. A claimed directory (``fingerprint.json``), one locked by another
    process (a relaunch under way), one without a ``.lock`` (no job got that far: a dry run, a
    value refused before) and a read-only one are left exactly as they are. The record a sweep
    keeps of a failed job (its ``result.json``) stays."""
    lock = run_dir / LOCK
    try:
        if not lock.is_file() or (run_dir / FINGERPRINT).exists():
            return False
        import fcntl

        fd = os.open(lock, os.O_RDWR)
    except (OSError, ImportError):
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another launch holds it: the directory is its now
        if (run_dir / FINGERPRINT).exists():  # claimed between our look and the lock
            return False
        only_ours = {p.name for p in run_dir.iterdir()} <= {LOCK, log_name}
        if only_ours:
            (run_dir / log_name).unlink(missing_ok=True)
        lock.unlink()
    except OSError:  # read-only, or gone: leave it
        return False
    finally:
        os.close(fd)
    if only_ours:
        with contextlib.suppress(OSError):  # something arrived meanwhile: keep the directory
            run_dir.rmdir()
            return True
    return False


def clear_error(directory: Path) -> None:
    """A run that succeeded leaves nothing of an earlier failure behind: no ``error.txt``, and
    no ``.<name>.tmp`` file of an atomic write (``repro.files``) that failed or was killed before
    its rename (a disk-full failure left ``.error.txt.tmp``). Called holding the lock, once the
    run's writes are done; the staging directories of ``best/``/``last/`` are
    ``repro.files.recover_dir``'s."""
    with contextlib.suppress(FileNotFoundError):
        (directory / ERROR).unlink()
    for path in directory.rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
