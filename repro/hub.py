"""Can the Hugging Face hub be reached? Asked once, answered in seconds.

Without network, ``huggingface_hub`` retries each request with backoff (1 + 2 + 4 + 8 + 8 = 23 s)
before transformers or datasets give up, so every job of an offline sweep spent that long and
printed each retry warning. ``check_hub_reachable`` sends one HEAD request to the endpoint
(``$HF_ENDPOINT``, else huggingface.co), waits at most ``PROBE_TIMEOUT`` seconds (DNS
included), remembers the answer for the rest of the process, and remembers a failure for
``REMEMBER_SECONDS`` in ``${REPRO_CACHE:-~/.cache/repro}/hub_unreachable.json``, so the other jobs
of a SLURM array fail at once too. The error says how to work offline.

Nothing here runs when an offline variable (``HF_HUB_OFFLINE``, ...) is set: the libraries then
use their local caches without asking the network.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from repro.cli import first_line

log = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_TIMEOUT = 3.0  # seconds
REMEMBER_SECONDS = 300  # how long other processes trust a failed probe
OFFLINE_HINT = (
    "to work offline set HF_HUB_OFFLINE=1 with model.path=<local checkpoint> and "
    "task.data_dir=<local files>, or run experiment=toy to try the suite offline"
)

# endpoint → None (it answered) or why it could not be reached; one probe per process
_answers: dict[str, str | None] = {}


class HubUnreachable(ConnectionError):
    """The hub cannot be reached and nothing local can stand in (an OSError: a user error)."""


def hub_offline() -> bool:
    """True when the user switched the hub off (``HF_HUB_OFFLINE=1`` or the like)."""
    return any(
        os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_VARIABLES
    )


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` as it is now, else the endpoint huggingface_hub was imported with."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_hub_reachable(endpoint: str | None = None, *, needed_for: str = "") -> None:
    """Raise ``HubUnreachable`` (one line: the endpoint, why, what to do) if the hub cannot be
    reached; return at once if it can, if it answered before, or if the hub is switched off.

    Args:
        endpoint: the hub's URL; default ``hub_endpoint()``.
        needed_for: what needs it, for the message (``"to download google/t5-base-lm-adapt"``).
    """
    if hub_offline():
        return
    endpoint = endpoint or hub_endpoint()
    if endpoint not in _answers:
        remembered = _remembered(endpoint)
        if remembered is not None:
            _answers[endpoint] = remembered
        else:
            _answers[endpoint] = _probe(endpoint, PROBE_TIMEOUT)
            _remember(endpoint, _answers[endpoint])
    reason = _answers[endpoint]
    if reason is not None:
        what = f" {needed_for}" if needed_for else ""
        raise HubUnreachable(
            f"cannot reach the Hugging Face hub at {endpoint} ({reason}){what}; {OFFLINE_HINT}"
        )


def load_from_cache_only(repo_id: str) -> bool:
    """Whether to load the hub model ``repo_id`` with ``local_files_only=True``.

    False when the hub answers (or is switched off: the libraries then read their cache
    themselves); True when it does not but the hub cache holds the repo's ``config.json`` (a
    warning says so); otherwise raises ``HubUnreachable``.
    """
    try:
        check_hub_reachable(needed_for=f"to download {repo_id}")
    except HubUnreachable as err:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            raise
        log.warning("%s: loading %s from the local hub cache", str(err).split(";")[0], repo_id)
        return True
    return False


def _probe(endpoint: str, timeout: float) -> str | None:
    """One HEAD request: None if the server answered at all (any HTTP status), else why not."""
    answer: list[str | None] = []

    def ask() -> None:
        try:
            request = urllib.request.Request(endpoint, method="HEAD")
            urllib.request.urlopen(request, timeout=timeout).close()
            answer.append(None)
        except urllib.error.HTTPError:  # an HTTP error status is an answer
            answer.append(None)
        except urllib.error.URLError as err:
            # A certificate the stdlib does not trust still means the server is there; the
            # hub client has its own certificate settings.
            cert = isinstance(err.reason, ssl.SSLCertVerificationError)
            answer.append(None if cert else first_line(err.reason))
        except (OSError, ValueError) as err:  # timeouts, resets, a malformed URL
            answer.append(first_line(err))

    # A thread, because urlopen's timeout does not bound the DNS lookup.
    thread = threading.Thread(target=ask, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return answer[0] if answer else f"no answer within {timeout:g} s"


def _memo_path() -> Path:
    root = os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "repro"
    return Path(root) / "hub_unreachable.json"


def _remembered(endpoint: str) -> str | None:
    """Why another process found ``endpoint`` unreachable within ``REMEMBER_SECONDS``, or None."""
    path = _memo_path()
    try:
        entry = json.loads(path.read_text()).get(endpoint)
        age = time.time() - float(entry["time"])
        reason = str(entry["reason"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not 0 <= age < REMEMBER_SECONDS:
        return None
    return f"{reason}; found {age:.0f} s ago, delete {path} to check again"


def _remember(endpoint: str, reason: str | None) -> None:
    """Record a failed probe for the other jobs (a success clears it); best effort."""
    path = _memo_path()
    try:
        memo = json.loads(path.read_text())
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    if reason is None and endpoint not in memo:
        return
    if reason is None:
        memo.pop(endpoint)
    else:
        memo[endpoint] = {"time": time.time(), "reason": reason}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, path)
    except OSError as err:
        log.debug("cannot record the hub probe in %s: %s", path, err)
