"""The method axis: what a run trains, what it saves, how it is priced (docs/model_tuning.md).

``method=<name>`` on the command line picks ``conf/method/<name>.yaml`` (the recipe: optimizer,
batch, backbone objective) and an entry of :data:`METHODS` here (what the code does with it).
A new method (e.g. LoRA) adds one YAML file and one entry, and whatever its ``trains`` and
``saves`` need in ``repro.model`` / ``repro.trainer`` / ``repro.cost``.

- ``prompt``: the paper's prompt tuning, a frozen backbone and one soft prompt per task.
- ``model``: "Model Tuning", every weight of the backbone, one task per run directory.
- ``model_multitask``: "Model Tuning (Multi-task)", one model on a mixture of the job's tasks
  (each input prefixed by its task's name), evaluated on each task.
- ``lora``: LoRA (Hu et al. 2021) through peft on the same frozen backbone: low-rank updates of
  the attention projections (``method.r``, ``method.alpha``, ``method.dropout``,
  ``method.target_modules``; docs/lora.md), one adapter per task.

A job is checked against its method here too: a mixture method on one task
(:func:`check_tasks`), a prompt or LoRA key on the command line of a method that does not read it
(:func:`check_method_overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """What one value of ``method`` means to the code.

    Attributes:
        name: the config value (``method=<name>``), the ``method`` field of result.json and the
            ``method`` column of the results frame.
        label: the legend label of Figure 1 (the paper's words).
        trains: ``"prompt"`` (a [p, d] prompt in front of a frozen backbone), ``"backbone"``
            (every weight of the backbone) or ``"lora"`` (LoRA matrices beside a frozen one).
        saves: what ``best/`` and ``last/`` hold: ``"prompt"`` (prompt.safetensors),
            ``"model"`` (a full checkpoint: config.json, model.safetensors, tokenizer files) or
            ``"adapter"`` (peft's adapter_config.json + adapter_model.safetensors).
        mixture: one run trains all the job's tasks at once (one model, one ``best/``) instead
            of one after the other.
        prompt_axes: ``prompt_len`` and ``init`` apply (else they are None in result.json and
            setting them is refused).
    """

    name: str
    label: str
    trains: str
    saves: str
    mixture: bool = False
    prompt_axes: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("prompt", "Prompt Tuning", trains="prompt", saves="prompt", prompt_axes=True),
        Method("model", "Model Tuning", trains="backbone", saves="model"),
        Method("lora", "LoRA", trains="lora", saves="adapter"),
        Method(
            "model_multitask",
            "Model Tuning (Multi-task)",
            trains="backbone",
            saves="model",
            mixture=True,
        ),
    )
}
DEFAULT_METHOD = "prompt"
# method.<key>s only LoRA reads (conf/method/lora.yaml); setting one for another method is refused.
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


def get_method(name: str) -> Method:
    """The method called ``name``; ValueError listing the allowed names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"method={name!r} is not allowed; choose one of: {', '.join(METHODS)}"
        ) from None


def check_tasks(method: str, task: str, names: tuple[str, ...], mixtures) -> None:
    """Refuse a method that trains a mixture on a job of one task.

    Args:
        task: the job's ``task=`` value; names: what it expands to; mixtures: the names that
            stand for several tasks (``repro.tasks.MIXTURES``), for the message.
    """
    if get_method(method).mixture and len(names) < 2:
        raise ValueError(
            f"method={method} trains one model on a mixture of tasks: task= must name one "
            f"({', '.join(sorted(mixtures))}); got task={task}"
        )


def check_method_overrides(method: str, overrides: Sequence[str]) -> None:
    """Refuse a command that sets what its method does not use (``method=model prompt_len=20``):
    the prompt's keys (``prompt_len``, ``init``, ``init.*``) mean nothing to a method that trains
    no prompt. Checked against the command's overrides, not the config's values, because an
    experiment file may set them for the prompt runs of a sweep that also holds other methods.

    Raises:
        ValueError: naming the override and the method.
    """
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if method != "lora" and key.startswith("method.") and key[len("method.") :] in LORA_KEYS:
            raise ValueError(
                f"{override} only applies to method=lora; method={method} trains no LoRA adapter"
            )
        if get_method(method).prompt_axes:
            continue
        if key in ("prompt_len", "init") or key.startswith("init."):
            raise ValueError(
                f"{override} only applies to method=prompt; method={method} trains no prompt "
                f"(allowed methods with a prompt: {', '.join(prompt_methods())})"
            )


def check_lora_rank(r: int, widths: Mapping[str, tuple[int, int]]) -> str | None:
    """Whether LoRA's rank ``method.r`` means something for the layers it adapts.

    Beside a layer W [out, in], LoRA's update ``B A`` (A [r, in], B [out, r]) has rank at most
    min(r, in, out): an r above a layer's smaller width adds parameters to its adapter, never
    rank. Hence (docs/lora.md): r above the smallest width of the adapted layers is warned
    about (some adapters hold parameters that add nothing), and r above their largest width,
    where every adapter outgrows its layer and none can use the rank, is refused.

    Args:
        widths: {target module: (in, out)} of each adapted layer (``repro.resolve``).

    Returns:
        the warning for an r above the smallest width, else None.

    Raises:
        ValueError: r above the largest width, one line naming the layers and what is allowed.
    """
    if not widths:
        return None
    layers = ", ".join(f"{name} {i}→{o}" for name, (i, o) in widths.items())
    smallest = min(min(io) for io in widths.values())
    largest = max(max(io) for io in widths.values())
    if r > largest:
        every = f" (<= {smallest} for every layer to use it)" if smallest < largest else ""
        raise ValueError(
            f"method.r={r} is larger than every width of the layers it adapts ({layers}): no "
            f"update can use that rank and each adapter would outgrow its layer; choose "
            f"1 <= method.r <= {largest}{every}"
        )
    if r > smallest:
        return (
            f"method.r={r} exceeds {smallest}, the smallest width of the layers it adapts "
            f"({layers}): their update has rank at most their smaller width, so r beyond it "
            "adds parameters without adding rank"
        )
    return None


def prompt_methods() -> list[str]:
    """The methods that train a prompt (and so read ``prompt_len`` and ``init``)."""
    return [m.name for m in METHODS.values() if m.prompt_axes]
