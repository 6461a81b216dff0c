"""Shared fixtures: tiny models and tokenizers the tests build themselves; no network."""

import os

# Set before transformers / datasets / wandb are imported anywhere in the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One pytest-xdist worker per core: each (and each process it starts) takes one thread, so they
# do not oversubscribe the cores (the default run took 6:58 with torch's per-core threads in
# every worker, 6:02 with one, on our 2-core machine).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every subprocess a test starts imports this checkout, whichever copy pip installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(
        None,
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")],
    )
)

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


def pytest_configure(config):
    """The bad-input table is gathered in one process: refuse a parallel run that would write
    none (pytest-xdist's workers each see only their share of the tests)."""
    if os.environ.get("REPRO_BAD_INPUT_TABLE") and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("REPRO_BAD_INPUT_TABLE needs one process: add -n 0")


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
        "    REPRO_BAD_INPUT_TABLE=docs/bad_input.md python -m pytest -n 0",
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


def train_smoke_runs(root: Path, tiny_t5_dir, runs: dict[str, list[str]]) -> dict[str, Path]:
    """Short smoke runs on the tiny model (10 steps), in-process: {name: run dir}."""
    from test_run import smoke_config

    from repro.job.experiment import run_experiment

    out = {}
    for name, overrides in runs.items():
        cfg = smoke_config(
            root,
            tiny_t5_dir,
            "trainer.steps=10",
            "trainer.eval_every=5",
            "task.max_eval_examples=32",
            *overrides,
        )
        out[name] = root / "sweep" / name
        summary = run_experiment(cfg, out[name])
        assert summary["status"] == "finished", summary
    return out


@pytest.fixture(scope="session")
def prompt_runs(tmp_path_factory, tiny_t5_dir):
    """Three toy_keyword prompts (seeds 0-2) on the tiny model."""
    root = tmp_path_factory.mktemp("prompt-runs")
    return train_smoke_runs(
        root, tiny_t5_dir, {f"kw-s{seed}": [f"seed={seed}"] for seed in range(3)}
    )


@pytest.fixture(scope="session")
def prompt_run(tmp_path_factory, tiny_t5_dir):
    """One toy_keyword prompt on the tiny model."""
    root = tmp_path_factory.mktemp("prompt-run")
    return train_smoke_runs(root, tiny_t5_dir, {"kw-s0": []})["kw-s0"]
