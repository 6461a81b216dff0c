"""Shared fixtures: tiny models and tokenizers the tests build themselves; no network."""

import os

# Set before transformers / datasets / wandb are imported anywhere in the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import re
import sys
from pathlib import Path

import pytest

from repro.tiny import ensure_tiny_t5


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    """A random 2-layer T5.1.1-shaped model (d_model 32) with a SentencePiece tokenizer."""
    return ensure_tiny_t5(tmp_path_factory.mktemp("assets") / "tiny-t5")


@pytest.fixture(scope="session")
def tokenizer(tiny_t5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_t5_dir)


TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/ ]+?/")


def pytest_sessionfinish(session, exitstatus):
    """With ``REPRO_BAD_INPUT_TABLE=docs/bad_input.md``, write every mistake the tests checked:
    the test (its id names the input), the one error line and the exit code."""
    out = os.environ.get("REPRO_BAD_INPUT_TABLE")
    module = sys.modules.get("test_bad_input")
    if not out or module is None or not module.SEEN_ERRORS:
        return
    rows = sorted(set(module.SEEN_ERRORS))
    lines = [
        "# Bad input: what each mistake prints",
        "",
        "Generated from the tests: every case asserts exactly one `error:` line, no traceback and",
        "the exit code below, and that nothing already written was touched. Regenerate with",
        "",
        "    REPRO_BAD_INPUT_TABLE=docs/bad_input.md python -m pytest",
        "",
        "`<tmp>` stands for the test's temporary directory.",
        "",
        "| test (input) | message | exit |",
        "|---|---|---|",
    ]
    for test, line, code in rows:
        line = TMP.sub("<tmp>/", line).replace("|", "\\|")
        lines.append(f"| `{test}` | {line} | {code} |")
    Path(out).write_text("\n".join(lines) + "\n")
