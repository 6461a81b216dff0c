"""The soft prompt: a trainable [P, H] matrix, how it is placed, how it starts, how it is saved.

The prompt is kept apart from *how it is combined* with the input (``prepend_prompt``), and its
initialisers are small functions in a registry named after the legend of Figure 3(b).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from repro.cli import first_line

PROMPT_FILE = "prompt.safetensors"
SIDECAR_FILE = "prompt.json"


class PromptFileError(ValueError):
    """A prompt file or its sidecar that cannot be read (torn, or not what it claims to be);
    ``path`` names the file, so that a caller can say what to do with it."""

    def __init__(self, path: Path, reason: BaseException):
        self.path = path
        super().__init__(f"{path} cannot be read ({first_line(reason)})")


class SoftPrompt(nn.Module):
    """A trainable prompt P [P, H], always stored in fp32 whatever the backbone's dtype."""

    def __init__(self, weight: Tensor):
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"a prompt is a [P, H] matrix; got shape {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.detach().to(torch.float32).clone())

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    @property
    def width(self) -> int:
        return self.weight.shape[1]

    def forward(self) -> Tensor:
        """Returns P [P, H]."""
        return self.weight


def prepend_prompt(prompt: Tensor, embeds: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Place the prompt in front of every sequence of the batch.

    Args:
        prompt: [P, H], any dtype; cast to the embeddings' dtype (gradients still reach fp32 P).
        embeds: [B, T, H] input token embeddings.
        attention_mask: [B, T], 1 for real tokens (padding on the right for T5's encoder, on
            the left for a causal LM's input: ``repro.causal``).

    Returns:
        ([B, P+T, H] embeddings, [B, P+T] mask with P leading ones).
    """
    if prompt.shape[-1] != embeds.shape[-1]:
        raise ValueError(
            f"prompt width {prompt.shape[-1]} does not match the model's d_model {embeds.shape[-1]}"
        )
    batch = embeds.shape[0]
    prefix = prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    ones = attention_mask.new_ones(batch, prompt.shape[0])
    return torch.cat([prefix, embeds], dim=1), torch.cat([ones, attention_mask], dim=1)


# --- initialisers --------------------------------------------------------------------------
# Each takes the frozen embedding table [V, H], the prompt length P and a seeded generator, and
# returns a fresh fp32 [P, H] tensor. Extra keywords are shared so one call site serves all.

Initialiser = Callable[..., Tensor]
# random_uniform's range: init.low/high as given (the paper's) | the embedding table's spread
UNIFORM_SCALES = ("fixed", "embedding")


def random_uniform(
    table: Tensor,
    length: int,
    generator: torch.Generator,
    *,
    low: float = -0.5,
    high: float = 0.5,
    scale: str = "fixed",
    **_: Any,
) -> Tensor:
    """U[low, high): the paper's U[-0.5, 0.5]; the official code's flax ``uniform(0.5)`` is U[0, 0.5).

    ``scale="embedding"`` (``init.scale``): the range scaled to the backbone's own embeddings,
    U[-a, a) with a = √3 · σ, σ the standard deviation of all the vocabulary table's entries: a
    uniform whose entries spread as the table's do. ±0.5 is a range for T5's table (its entries'
    σ is of order 10); a causal LM's is often ~0.02, where ±0.5 is a prompt far off its tokens.
    """
    if not low < high:
        raise ValueError(f"random_uniform needs low < high; got low={low}, high={high}")
    if scale not in UNIFORM_SCALES:
        raise ValueError(f"unknown init.scale {scale!r}; allowed: {', '.join(UNIFORM_SCALES)}")
    if scale == "embedding":
        bound = 3**0.5 * table.to(torch.float32).std().item()
        low, high = -bound, bound
    shape = (length, table.shape[1])
    return torch.rand(shape, generator=generator, dtype=torch.float32) * (high - low) + low


def sample_vocab_ids(
    length: int, population: int, vocab_size: int, generator: torch.Generator
) -> Tensor:
    """Ids drawn from the first ``population`` ids, without replacement unless P > population."""
    if population < 1:
        raise ValueError(f"sampled_vocab population must be >= 1; got {population}")
    population = min(population, vocab_size)
    if length <= population:
        return torch.randperm(population, generator=generator)[:length]
    return torch.randint(population, (length,), generator=generator)


def sampled_vocab(
    table: Tensor,
    length: int,
    generator: torch.Generator,
    *,
    population: int = 5000,
    **_: Any,
) -> Tensor:
    """Rows of the frozen table for ids sampled from the ``population`` most frequent ids.

    SentencePiece orders ids by frequency, so "the 5,000 most common tokens" are ids 0–4999
    (which include pad/eos/unk, exactly as in the official code's rows 0–4999).
    """
    ids = sample_vocab_ids(length, population, table.shape[0], generator)
    return table[ids].to(torch.float32).clone()


def class_label(
    table: Tensor,
    length: int,
    generator: torch.Generator,
    *,
    class_token_ids: Sequence[Sequence[int]] = (),
    population: int = 5000,
    **_: Any,
) -> Tensor:
    """Row i = mean embedding of class i's sub-tokens; the rest sampled vocab; truncated if P < #classes."""
    if not class_token_ids:
        raise ValueError(
            "class_label init needs the task's label strings or init words; this task has none"
        )
    rows = []
    for ids in class_token_ids[:length]:
        if len(ids) == 0:
            raise ValueError("class_label init got a label that tokenises to no sub-tokens")
        rows.append(table[torch.as_tensor(list(ids))].to(torch.float32).mean(dim=0))
    labelled = torch.stack(rows)
    rest = length - labelled.shape[0]
    if rest == 0:
        return labelled
    return torch.cat([labelled, sampled_vocab(table, rest, generator, population=population)])


def repeat_to_length(ids: Sequence[int], length: int) -> list[int]:
    """PEFT's TEXT rule: the first ``length`` ids, repeating the whole sequence as often as
    needed when it is shorter (``ceil(length / len(ids))`` copies, then cut)."""
    if not ids:
        raise ValueError("text init got a text that tokenises to no tokens")
    copies = -(-length // len(ids))
    return (list(ids) * copies)[:length]


def text(
    table: Tensor,
    length: int,
    generator: torch.Generator,
    *,
    text_ids: Sequence[int] = (),
    text_rule: str = "peft",
    low: float = 0.0,
    high: float = 0.01,
    **_: Any,
) -> Tensor:
    """Row i = the embedding of the text's i-th token.

    ``text_rule="peft"`` (PEFT's TEXT init): ``text_ids`` are the tokenizer's ids *with* eos,
    cut to P or repeated until they fill it. ``"official"`` (the official
    ``from_embedded_string``): ids without eos, cut to P; rows past the text's end come from
    ``random_uniform(low, high)``, its fallback initialiser: flax ``uniform()`` = U[0, 0.01)
    there, which ``conf/init/text.yaml`` sets as ``init.low``/``init.high``.
    """
    if text_rule == "peft":
        return table[torch.as_tensor(repeat_to_length(text_ids, length))].to(torch.float32).clone()
    if text_rule != "official":
        raise ValueError(f"unknown text rule {text_rule!r}; allowed: peft, official")
    if not text_ids:
        raise ValueError("text init got a text that tokenises to no tokens")
    prompt = random_uniform(table, length, generator, low=low, high=high)
    ids = torch.as_tensor(list(text_ids)[:length])
    prompt[: len(ids)] = table[ids].to(torch.float32)
    return prompt


def from_file(
    table: Tensor, length: int, generator: torch.Generator, *, prompt: Tensor, **_: Any
) -> Tensor:
    """A given prompt (``init.path``, read by :func:`repro.interop.read_prompt`), unchanged."""
    expected = (length, table.shape[1])
    if tuple(prompt.shape) != expected:
        raise ValueError(
            f"the prompt file holds shape {tuple(prompt.shape)}; this run needs {expected} "
            f"(prompt_len, d_model)"
        )
    return prompt.detach().to(torch.float32).clone()


INITIALISERS: dict[str, Initialiser] = {
    "random_uniform": random_uniform,
    "sampled_vocab": sampled_vocab,
    "class_label": class_label,
    "text": text,
    "from_file": from_file,
}


def init_prompt(
    name: str,
    table: Tensor,
    length: int,
    seed: int,
    **kwargs: Any,
) -> Tensor:
    """Initial prompt values [P, H] from the registry, deterministic given ``seed``."""
    if name not in INITIALISERS:
        raise ValueError(f"unknown prompt init {name!r}; allowed: {', '.join(INITIALISERS)}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"prompt length must be an integer >= 1; got {length!r}")
    check_prompt_fits(length, table.shape[1])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return INITIALISERS[name](table.detach(), length, generator, **kwargs)


def memory_limit_bytes() -> int | None:
    """The memory this process may use: the least of the machine's RAM and its address-space
    and data limits (``ulimit -v`` / ``-d``); None if none is known."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        import resource  # POSIX only
    except ImportError:
        return min(limits, default=None)
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        soft = resource.getrlimit(getattr(resource, name))[0] if hasattr(resource, name) else -1
        if soft not in (resource.RLIM_INFINITY, -1):
            limits.append(soft)
    return min(limits, default=None)


def check_prompt_fits(length: int, width: int) -> None:
    """Refuse, before allocating it, a prompt [length, width] the process cannot hold: a run
    keeps it twice in fp32 (the initial value and the trained copy)."""
    size = length * width * 4
    limit = memory_limit_bytes()
    if limit is not None and 2 * size > limit:
        raise ValueError(
            f"prompt_len={length}: a [{length}, {width}] fp32 prompt is {size / 1e9:.1f} GB and a "
            f"run holds it twice (initial and trained), more than the {limit / 1e9:.1f} GB of "
            "memory this process may use; choose a smaller prompt_len (the paper's longest: 150)"
        )


def text_token_ids(tokenizer, text: str, rule: str = "peft") -> list[int]:
    """The ids :func:`text` embeds: PEFT's ``tokenizer(text)["input_ids"]`` (eos appended, as
    T5's tokenizer does), or the official rule's ids without special tokens."""
    ids = tokenizer(text, add_special_tokens=rule == "peft")["input_ids"]
    if rule == "official" and not ids:
        raise ValueError(f"init.text={text!r} tokenises to no tokens")
    return ids


def label_token_ids(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """The tokenizer's sub-token ids of each label word, without special tokens (no eos)."""
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in words]
    for word, pieces in zip(words, ids, strict=True):
        if not pieces:
            raise ValueError(f"label word {word!r} tokenises to no sub-tokens")
    return ids


# --- save / load ---------------------------------------------------------------------------


def save_prompt(prompt: Tensor, out_dir: str | os.PathLike, **sidecar: Any) -> Path:
    """Write ``prompt.safetensors`` and a JSON sidecar (backbone, p, d_model, init, task, step...).

    Both files are written aside and renamed, so a crash never leaves a half-written prompt.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensor = prompt.detach().to(torch.float32).cpu().contiguous()
    meta = {"prompt_len": tensor.shape[0], "d_model": tensor.shape[1], **sidecar}
    save_file({"prompt": tensor}, out_dir / f".{PROMPT_FILE}.tmp")
    os.replace(out_dir / f".{PROMPT_FILE}.tmp", out_dir / PROMPT_FILE)
    (out_dir / f".{SIDECAR_FILE}.tmp").write_text(json.dumps(meta, indent=2, default=str))
    os.replace(out_dir / f".{SIDECAR_FILE}.tmp", out_dir / SIDECAR_FILE)
    return out_dir


def load_prompt(path: str | os.PathLike, d_model: int | None = None) -> tuple[Tensor, dict]:
    """Read a prompt [P, H] and its sidecar; refuse one of another width than ``d_model``.

    Raises:
        PromptFileError: the prompt or its sidecar cannot be read (named).
        ValueError: a prompt of another width than ``d_model``.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    file = directory / PROMPT_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no prompt file at {file}")
    try:
        prompt = load_file(file)["prompt"]
    except KeyError:
        raise PromptFileError(file, ValueError("it holds no 'prompt' tensor")) from None
    except Exception as err:  # safetensors' own SafetensorError for a torn or foreign file
        raise PromptFileError(file, err) from err
    sidecar_file = directory / SIDECAR_FILE
    try:
        meta = json.loads(sidecar_file.read_text()) if sidecar_file.exists() else {}
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
        raise PromptFileError(sidecar_file, err) from err
    if d_model is not None and prompt.shape[1] != d_model:
        raise ValueError(
            f"prompt {file} has width {prompt.shape[1]} (shape {tuple(prompt.shape)}) but the "
            f"model's d_model is {d_model}; a prompt only loads into a model of its own width"
        )
    return prompt, meta
