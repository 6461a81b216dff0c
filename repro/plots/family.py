"""The backbone family in the figures (issue 29): `t5` (encoder-decoder) or `causal` (decoder-only
LMs: Pythia, Qwen2.5, SmolLM2), the run frame's `family` column (NA or no column: `t5`).

- Scores of two families are never averaged or joined: `repro.collect.superglue` keys points by
  family where a frame holds several, and a panel of such a frame draws a line per axis value
  *and* family (the family in its legend label and its line style, `FAMILY_STYLES`).
- One figure per family: `figure3` / `figure1` of a run frame holding several families write
  each file once per family, named `<name>_<family>` (`figure3a_prompt_len_t5.png`,
  `figure3a_prompt_len_causal.png`, `figure3_causal.pdf`, `figure1_t5.png`, ...:
  `family_file`); a frame of one family keeps the names `<name>` (`figure3a_prompt_len.png`).
- Titles: a causal figure says "decoder-only (causal) backbones" under its title; its Figure 3(d)
  axis is "Pre-training steps" (a causal LM's `lm_adapt_steps` count pre-training steps:
  Pythia's step<N> checkpoints) and its objective panel compares `next_token` (as pre-trained)
  with `instruct` (instruction-tuned). A T5 figure is titled as it always was, and names its
  family ("encoder-decoder (T5) backbones") only beside a causal one (`family=` given).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from repro.collect.superglue import family_rank
from repro.plots.reference import TOY_NOTE, non_t5_sizes

T5, CAUSAL = "t5", "causal"  # repro.config.FAMILIES
FAMILY_NOTES = {T5: "encoder-decoder (T5) backbones", CAUSAL: "decoder-only (causal) backbones"}
TOY_FAMILY_NOTES = {
    T5: f"{TOY_NOTE}; encoder-decoder",
    CAUSAL: "toy model; decoder-only (causal)",
}
# A causal model below this many parameters is a toy or tiny one (the toy ladder has < 1M; the
# smallest released LM configured, Pythia-70M, has 70M).
CAUSAL_TOY_PARAMS = 1e7
# What a causal figure calls a panel and its legend where the T5 words do not apply.
CAUSAL_PANEL_TITLES = {
    "objective": "(c) Pre-trained vs instruction-tuned",
    "lm_adapt_steps": "(d) Pre-training steps",
}
CAUSAL_LEGEND_TITLES = {"objective": "Checkpoint", "lm_adapt_steps": "Pre-training steps"}
# A frame of several families: (line style, marker) of each family's lines.
FAMILY_STYLES = {T5: ("-", "o"), CAUSAL: ("-.", "D")}


def families_of(frame: pd.DataFrame, family: str | None = None) -> list[str]:
    """The families of a figure frame, t5 first: its `family` column's (NA is `t5`), else
    `family` (a frame of one family's runs: `superglue_frame` drops the key), else `t5`."""
    if "family" in frame.columns and len(frame):
        present = sorted(frame["family"].fillna(T5).unique(), key=family_rank)
        if len(present) > 1 or family is None:
            return [str(f) for f in present]
    return [family or T5]


def named(frame: pd.DataFrame, family: str | None) -> bool:
    """Whether a figure names its family: given explicitly, or any but T5 alone (a T5-only
    figure keeps the paper's titles)."""
    return family is not None or families_of(frame) != [T5]


def family_rows(frame: pd.DataFrame, family: str) -> pd.DataFrame:
    """The rows of `family` in a figure frame (all of them if it has no `family` column)."""
    if "family" not in frame.columns:
        return frame
    return frame[frame["family"].fillna(T5).eq(family).to_numpy()]


def is_toy(frame: pd.DataFrame, family: str) -> bool:
    """A toy or tiny model's frame: not a T5.1.1 size (T5), or a causal LM of fewer than
    `CAUSAL_TOY_PARAMS` parameters or named toy_*."""
    if family != CAUSAL:
        return bool(non_t5_sizes(frame))
    small = frame["params"].astype(float).lt(CAUSAL_TOY_PARAMS)
    return bool((small | frame["size"].astype(str).str.startswith("toy")).any())


def family_note(frame: pd.DataFrame, family: str | None) -> str:
    """What a figure says under its title of the backbones it shows: "toy model, not T5" for a
    toy T5 frame (as before families), "decoder-only (causal) backbones" for a causal one, each
    family's for a frame of several; "" for T5.1.1 sizes alone."""
    if not named(frame, family):
        return TOY_NOTE if non_t5_sizes(frame) else ""
    notes = []
    for f in families_of(frame, family):
        rows = family_rows(frame, f)
        toy = len(rows) > 0 and is_toy(rows, f)
        notes.append((TOY_FAMILY_NOTES if toy else FAMILY_NOTES).get(f, f"{f} backbones"))
    return "; ".join(notes)


def family_title(title: str, frame: pd.DataFrame, family: str | None) -> str:
    """`title`, and the `family_note` under it (`toy_title` for a T5-only frame)."""
    note = family_note(frame, family)
    return f"{title}\n({note})" if note else title


def axis_text(
    table: Mapping[str, str], causal: Mapping[str, str], axis: str, families: Sequence[str]
) -> str:
    """A panel's title or legend title from the T5 `table` and its `causal` counterpart: the
    causal words for a causal panel, both for a panel of both families."""
    t5_text = table.get(axis, axis)
    if CAUSAL not in families or axis not in causal:
        return t5_text
    if list(families) == [CAUSAL]:
        return causal[axis]
    return f"{t5_text} (T5) / {causal[axis].split(') ')[-1].lower()} (causal)"


def family_file(name: str, family: str, several: bool) -> str:
    """A figure's file name (no suffix): `name` for a frame of one family, else
    `<name>_<family>`."""
    return f"{name}_{family}" if several else name


def draw_per_family(
    groups: Mapping[str, pd.DataFrame], draw: Callable[[str, pd.DataFrame], dict], figure: str
) -> dict:
    """``draw(family, its runs)`` for each family of a frame of several, their files merged:
    a family that has nothing to draw (``ValueError``) is left out with a warning naming it;
    none at all raises, with every family's reason."""
    written, errors = {}, {}
    for family, runs in groups.items():
        try:
            written |= draw(family, runs)
        except ValueError as err:
            errors[family] = str(err)
    if not written:
        raise ValueError("; ".join(f"{f} backbones: {e}" for f, e in errors.items()))
    for family, err in errors.items():
        warnings.warn(f"no {figure} of the {family} backbones: {err}", UserWarning, stacklevel=3)
    return written
