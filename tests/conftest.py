"""Shared fixtures: tiny models and tokenizers the tests build themselves; no network."""

import os

# Set before transformers / datasets / wandb are imported anywhere in the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
