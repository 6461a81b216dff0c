"""What can go wrong while a run loads its pieces — tokenizer, weights, config.json, the hub, W&B
— reaches the user as one line naming the file or setting and what to do, never as a library's
traceback, and never as a run that trains on nothing and exits 0.

Nothing here touches the network: an unreachable hub is ``http://127.0.0.1:9`` (connection
refused at once) or a loopback socket that never answers.
"""

import json
import os
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_bad_input import cli

from repro import hub
from repro.backbone import load_backbone, load_tokenizer
from repro.config import LoggerConfig
from repro.tracking import WandbSink, WandbUnavailable

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
REFUSED = "unreachable.example/t5-no-such-model"  # a hub id no cache holds


def one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def smoke(tmp_path: Path, *overrides: str) -> list[str]:
    return [
        "experiment=smoke",
        f"paths.root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.steps=2",
        "trainer.eval_every=2",
        "task.max_eval_examples=8",
        *overrides,
    ]


@pytest.fixture
def checkpoint(tiny_t5_dir, tmp_path):
    """A copy of the tiny checkpoint this test may break."""
    return Path(shutil.copytree(tiny_t5_dir, tmp_path / "ckpt"))


# --- tokenizer -----------------------------------------------------------------------------------


def test_why_a_checkpoint_without_tokenizer_files_used_to_train_on_unk(checkpoint):
    """AutoTokenizer does not fail here: config.json's model_type gives T5Tokenizer, which
    without a vocabulary file builds a placeholder one, so every word is ``▁ <unk>``."""
    from transformers import AutoTokenizer

    for name in TOKENIZER_FILES:
        (checkpoint / name).unlink(missing_ok=True)
    placeholder = AutoTokenizer.from_pretrained(checkpoint)
    pieces = placeholder.convert_ids_to_tokens(placeholder("the cat")["input_ids"])
    assert set(pieces) <= {"▁", "<unk>", "</s>"}


def test_checkpoint_without_tokenizer_files_is_refused(checkpoint):
    for name in (*TOKENIZER_FILES, "special_tokens_map.json"):
        (checkpoint / name).unlink(missing_ok=True)
    with pytest.raises(OSError) as err:
        load_tokenizer(checkpoint)
    one_line(err, f"{checkpoint} has no tokenizer files", "spiece.model or tokenizer.json")


def test_tokenizer_without_a_vocabulary_is_refused(checkpoint):
    """tokenizer_config.json left, tokenizer.json gone: the placeholder vocabulary again."""
    (checkpoint / "tokenizer.json").unlink()
    with pytest.raises(ValueError) as err:
        load_tokenizer(checkpoint)
    one_line(err, f"tokenizer of {checkpoint} maps 'the cat sat on the mat' to <unk> only")


def test_tokenizer_without_eos_is_refused(checkpoint):
    path = checkpoint / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("eos_token")
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # a class with no eos of its own
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        load_tokenizer(checkpoint)
    one_line(err, f"the tokenizer of {checkpoint} has no eos token")


def test_corrupt_tokenizer_json_is_one_line(checkpoint):
    (checkpoint / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Uni')
    with pytest.raises(OSError) as err:
        load_tokenizer(checkpoint)
    one_line(err, f"cannot load a tokenizer from {str(checkpoint)!r}")


def test_the_tiny_tokenizer_loads(tiny_t5_dir):
    tokenizer = load_tokenizer(tiny_t5_dir)
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.unk_token_id not in tokenizer("the cat sat")["input_ids"]


# --- weights and config.json -------------------------------------------------------------------


def test_truncated_safetensors_names_the_file(checkpoint):
    weights = checkpoint / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(OSError) as err:
        load_backbone(checkpoint)
    one_line(err, f"{weights} is truncated or corrupt")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"model_type": "t5", "d_model": ', "config.json is not valid JSON (Expecting value"),
        ("[1, 2]", "config.json holds a JSON list, not a config object"),
        ("{}", "Should have a `model_type` key"),
        ('{"model_type": "t5", "d_model": "x"}', "Field 'd_model' expected int, got str"),
        (None, "has no config.json"),
    ],
    ids=["truncated", "list", "no-model-type", "bad-field", "missing"],
)
def test_bad_config_json_names_the_file(checkpoint, content, fragment):
    config = checkpoint / "config.json"
    if content is None:
        config.unlink()
    else:
        config.write_text(content)
    with pytest.raises((OSError, ValueError)) as err:
        load_backbone(checkpoint)
    message = one_line(err, fragment)
    assert str(checkpoint) in message
    assert "HF_HUB_OFFLINE" not in message  # no hub hint for a local directory


def test_truncated_checkpoint_through_the_cli(checkpoint, tmp_path, monkeypatch, capsys):
    weights = checkpoint / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    code, err = cli(monkeypatch, capsys, *smoke(tmp_path, f"model.path={checkpoint}"))
    assert code == 2, err
    (line,) = error_lines(err)
    assert f"{weights} is truncated or corrupt" in line


# --- the hub -----------------------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """The hub switched on but unreachable; a fresh process memory and cache dir; counts probes."""
    for name in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "repro-cache"))
    monkeypatch.setattr(hub, "_answers", {})
    probes = []
    real_probe = hub._probe

    def counted(endpoint, timeout):
        probes.append(endpoint)
        return real_probe(endpoint, timeout)

    monkeypatch.setattr(hub, "_probe", counted)
    return probes


HUB_FRAGMENTS = (
    "cannot reach the Hugging Face hub at http://127.0.0.1:9",
    "HF_HUB_OFFLINE=1 with model.path=<local checkpoint> and task.data_dir=<local files>",
    "experiment=toy",
)


def test_unreachable_hub_fails_in_seconds_and_is_probed_once(no_hub):
    start = time.monotonic()
    with pytest.raises(hub.HubUnreachable) as err:
        load_backbone(REFUSED)
    one_line(err, *HUB_FRAGMENTS, f"to download {REFUSED}", "Connection refused")
    with pytest.raises(hub.HubUnreachable):
        load_tokenizer(REFUSED)
    with pytest.raises(hub.HubUnreachable):
        load_backbone(REFUSED)
    assert time.monotonic() - start < 5
    assert no_hub == ["http://127.0.0.1:9"]  # one probe for the whole process


def test_one_probe_per_process_even_without_a_cache_dir(no_hub, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be created
    for _ in range(3):
        with pytest.raises(hub.HubUnreachable):
            hub.check_hub_reachable()
    assert len(no_hub) == 1


def test_other_processes_trust_a_recent_failure(no_hub, monkeypatch):
    with pytest.raises(hub.HubUnreachable):
        hub.check_hub_reachable()
    memo = hub._memo_path()
    assert memo.is_file()
    monkeypatch.setattr(hub, "_answers", {})  # a new process (the next job of the array)
    with pytest.raises(hub.HubUnreachable) as err:
        hub.check_hub_reachable()
    one_line(err, *HUB_FRAGMENTS, f"delete {memo} to check again")
    assert len(no_hub) == 1
    # once the memory is older than REMEMBER_SECONDS, the next process asks again
    entries = json.loads(memo.read_text())
    for entry in entries.values():
        entry["time"] -= hub.REMEMBER_SECONDS + 1
    memo.write_text(json.dumps(entries))
    monkeypatch.setattr(hub, "_answers", {})
    with pytest.raises(hub.HubUnreachable):
        hub.check_hub_reachable()
    assert len(no_hub) == 2


def test_a_reachable_hub_answers_and_clears_an_old_failure(no_hub, monkeypatch):
    with http_server(404) as url:  # any HTTP answer means the hub is there
        monkeypatch.setenv("HF_ENDPOINT", url)
        memo = hub._memo_path()
        memo.parent.mkdir(parents=True)
        stale = time.time() - hub.REMEMBER_SECONDS - 1
        memo.write_text(json.dumps({url: {"time": stale, "reason": "down"}, "other": {}}))
        hub.check_hub_reachable()
        hub.check_hub_reachable()
        assert no_hub == [url]
        assert json.loads(memo.read_text()) == {"other": {}}


def test_offline_mode_never_probes(no_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.check_hub_reachable()
    assert no_hub == []


def test_a_silent_server_times_out():
    with socket.socket() as listener:  # accepts the connection (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        start = time.monotonic()
        reason = hub._probe(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
    assert reason is not None and "timed out" in reason
    assert time.monotonic() - start < 2


def test_a_cached_model_loads_when_the_hub_is_unreachable(
    no_hub, tiny_t5_dir, tmp_path, monkeypatch
):
    """The hub cache holds the repo: load it from there, at once, instead of failing."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--unreachable.example--t5-cached" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_t5_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    start = time.monotonic()
    model = load_backbone("unreachable.example/t5-cached")
    tokenizer = load_tokenizer("unreachable.example/t5-cached")
    assert time.monotonic() - start < 5
    assert model.config.d_model == 32 and tokenizer.eos_token == "</s>"
    assert len(no_hub) == 1


def test_hub_data_fails_fast_naming_the_task(no_hub):
    from repro.tasks import get_task

    start = time.monotonic()
    with pytest.raises(hub.HubUnreachable) as err:
        get_task("rte").load_records("train")
    one_line(err, *HUB_FRAGMENTS, "to download task 'rte'")
    assert time.monotonic() - start < 5


def test_unreachable_hub_through_the_cli(no_hub, tmp_path, monkeypatch, capsys):
    """model=base names a hub id: each job of the sweep fails with one line, one probe in all."""
    start = time.monotonic()
    _, err = cli(monkeypatch, capsys, "-m", *smoke(tmp_path, "model=base", "prompt_len=1,5"))
    lines = error_lines(err)
    assert len(lines) == 2, err
    for line in lines:
        assert all(fragment in line for fragment in HUB_FRAGMENTS), line
    assert no_hub == ["http://127.0.0.1:9"]
    assert time.monotonic() - start < 15  # two jobs composed and failed; no retries


class http_server:
    """A loopback HTTP server answering every request with ``status``; yields its URL."""

    def __init__(self, status: int):
        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# --- W&B ---------------------------------------------------------------------------------------


def sink(tmp_path: Path, mode: str | None = None) -> WandbSink:
    return WandbSink(
        project="repro",
        entity=None,
        group=None,
        name="n",
        tags=[],
        mode=mode,
        config={},
        run_dir=tmp_path,
    )


def test_bad_wandb_mode_variable_is_refused_before_anything_loads(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    LoggerConfig(name="none")  # only logger=wandb reads it
    with pytest.raises(ValueError) as err:
        LoggerConfig(name="wandb", mode="offline")  # wandb reads WANDB_MODE even then
    one_line(err, "WANDB_MODE='bogus' is not a W&B mode; allowed: online, offline, disabled")


def test_bad_wandb_mode_variable_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    code, err = cli(monkeypatch, capsys, *smoke(tmp_path, "logger=wandb"))
    assert code == 2, err
    (line,) = error_lines(err)
    assert "WANDB_MODE='bogus' is not a W&B mode" in line and "logger=none" in line
    assert not list(tmp_path.glob("runs/*/fingerprint.json"))  # nothing was started


def test_bad_wandb_mode_variable_in_the_sink(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError) as err:
        sink(tmp_path, mode="offline")
    one_line(err, "WANDB_MODE='bogus'")


@pytest.mark.parametrize(
    ("mode", "offline_hint"), [("online", True), (None, True), ("offline", False)]
)
def test_wandb_init_failure_says_which_setting_to_change(tmp_path, monkeypatch, mode, offline_hint):
    import wandb

    def refuse(**kwargs):
        raise wandb.errors.CommError("Network error (ConnectTimeout), entering retry loop.\nmore")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(WandbUnavailable) as err:
        sink(tmp_path, mode=mode)
    message = one_line(err, "W&B could not start a run", "CommError: Network error", "logger=none")
    assert ("logger.mode=offline" in message) is offline_hint


def test_wandb_setting_rejected_by_wandb_names_the_variable(tmp_path, monkeypatch):
    """wandb's pydantic error for a bad WANDB_* value (what WANDB_INIT_TIMEOUT=soon gives; made
    here directly: wandb reads the environment once per process)."""
    import wandb

    with pytest.raises(ValueError) as rejected:
        wandb.Settings(init_timeout="soon")

    def refuse(**kwargs):
        raise rejected.value

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(WandbUnavailable) as err:
        sink(tmp_path, mode="disabled")
    one_line(err, "setting init_timeout='soon' (WANDB_INIT_TIMEOUT, if you set it)", "logger=none")
