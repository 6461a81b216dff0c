"""``python -m repro.export <prompt> --to peft|npy|repro <out>``: a prompt in another tool's format.

    python -m repro.export runs/rte-base-lm_adapt100k-p100-class_label-s0 --to peft out/rte_peft
    python -m repro.export rte.npy --to peft out/rte_peft --base-model google/t5-base-lm-adapt
    python -m repro.export path/to/peft_adapter --to repro out/rte_prompt

``<prompt>`` is anything :func:`repro.interop.read_prompt` reads: a run directory (its
``best/``, or ``--which last``), our prompt directory or ``.safetensors``, an official ``.npy``,
or a PEFT prompt-tuning adapter directory. ``--to peft`` writes an adapter directory that
``PeftModel.from_pretrained(backbone, out)`` loads (encoder-only, ``num_transformer_submodules
= 1``); ``--to npy`` the official code's array file; ``--to repro`` our ``prompt.safetensors`` +
``prompt.json`` (an import: usable as ``init=from_file init.path=<out>``). See docs/interop.md.

Where the prompt came from is recorded as a path relative to ``out`` (``source``). The backbone
the output records (PEFT's ``base_model_name_or_path``, our sidecar's ``backbone``) is the
prompt's own, or ``--base-model``: a hub id as it is (``google/t5-base-lm-adapt``:
``AutoPeftModelForSeq2SeqLM.from_pretrained(out)`` loads it), a local checkpoint directory as its
path relative to ``out`` (an own LM adaptation, a toy or tiny model: nothing of this machine's
layout is written, and an adapter moved together with its backbone still finds it; load that
backbone yourself, ``out / base_model_name_or_path``, and hand it to
``PeftModel.from_pretrained(backbone, out)``, as the adapter's README.md shows).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from repro.cli import USER_ERRORS, cli_error_message
from repro.files import read_json
from repro.interop import FORMATS, PEFT_TASK_TYPES, read_prompt, write_prompt

FAMILIES = tuple(PEFT_TASK_TYPES)  # t5, causal (repro.config.FAMILIES)


def export(
    source: str | Path,
    to: str,
    out: str | Path,
    *,
    base_model: str | None = None,
    which: str = "best",
    overwrite: bool = False,
    family: str | None = None,
) -> Path:
    """Read the prompt at ``source`` and write it as ``to`` at ``out`` (an existing ``out``
    only with ``overwrite``); returns ``out``. ``family`` (t5 | causal: the PEFT task type):
    default :func:`backbone_family`."""
    prompt, meta = read_prompt(source, which=which)
    read_from = Path(meta["files"][0]).parent
    backbone, local = portable_backbone(base_model or meta.get("backbone"), read_from, Path(out))
    family = family or backbone_family(source, meta, Path(out) / backbone if local else None)
    provenance = {
        "source": os.path.relpath(Path(source).expanduser().resolve(), Path(out).resolve()),
        "source_format": meta["format"],
        "backbone": backbone,
        **{k: meta.get(k) for k in ("task", "init", "step") if meta.get(k) is not None},
    }
    return write_prompt(
        prompt,
        out,
        to,
        base_model=backbone,
        base_model_local=local,
        meta=provenance,
        overwrite=overwrite,
        family=family,
    )


def backbone_family(source: str | Path, meta, local_backbone: Path | None) -> str:
    """The family of the backbone a prompt was trained on, from what records it: a run's
    ``result.json`` (``family``), a PEFT adapter's task type, a local backbone's config.json
    (``is_encoder_decoder``); else ``t5`` (a hub id read offline, an .npy of the official
    code's: T5's). ``--family`` says it when none of these does."""
    path = Path(source).expanduser()
    for run_dir in (path, path.parent):
        result = read_json(run_dir / "result.json") if run_dir.is_dir() else None
        if isinstance(result, dict) and result.get("family") in FAMILIES:
            return result["family"]
    if meta.get("peft_task_type") == PEFT_TASK_TYPES["causal"]:
        return "causal"
    config = read_json(local_backbone / "config.json") if local_backbone else None
    if isinstance(config, dict):
        return "t5" if config.get("is_encoder_decoder") else "causal"
    return "t5"


def portable_backbone(backbone: str | None, read_from: Path, out: Path) -> tuple[str | None, bool]:
    """What an output records as its backbone, and whether that is a local path: a local
    checkpoint directory as its path relative to ``out``; anything else (a hub id) as it is.

    A relative ``backbone`` is looked for from ``read_from``, the directory of the prompt read (as
    an output of this command records it), then from the current directory (as a run's
    ``model.path``, ``--base-model`` or a PEFT adapter of PEFT's own gives it).
    """
    if not backbone:
        return backbone, False
    path = Path(backbone).expanduser()
    for place in [path] if path.is_absolute() else [read_from / path, path]:
        if place.is_dir():
            return os.path.relpath(place.resolve(), out.expanduser().resolve()), True
    return backbone, False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repro.export",
        description="Write a prompt in another tool's format (PEFT adapter, official .npy, ours).",
    )
    parser.add_argument("source", help="run dir, prompt dir/.safetensors, .npy or PEFT adapter dir")
    parser.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    parser.add_argument(
        "out", help="where to write (must not exist unless --overwrite; npy: a .npy file)"
    )
    parser.add_argument(
        "--base-model",
        help="the backbone's hub id or local checkpoint directory (default: the one the prompt "
        "records); a directory is recorded as its path relative to out",
    )
    parser.add_argument(
        "--which",
        default="best",
        choices=("best", "last"),
        help="for a run dir: its best/ (default) or last/ prompt",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        help="the backbone's family (PEFT's task_type SEQ_2_SEQ_LM | CAUSAL_LM); default: what "
        "the run, the adapter or a local backbone's config.json records, else t5",
    )
    args = parser.parse_args(argv)
    try:
        out = export(
            args.source,
            args.to,
            args.out,
            base_model=args.base_model,
            which=args.which,
            overwrite=args.overwrite,
            family=args.family,
        )
    except USER_ERRORS as err:
        print(f"error: {cli_error_message(err)}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
