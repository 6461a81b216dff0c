"""The paper's reference points (`results/paper/reference.csv`: T5-XXL, GPT-3) and when they
may be drawn: only beside T5.1.1 sizes (`non_t5_sizes`; beside a toy or tiny model they would
read as a comparison, so they are left out with a `ReferenceWarning`) and only the rows whose
source is stated (`stated_reference`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from repro.collect.frame import T5_PARAMS

# Rows of results/paper/reference.csv whose split says the number is not checked are not drawn.
UNSTATED_SPLITS = ("", "unverified")
# The paper's numbers are for T5.1.1 (and GPT-3); a point is comparable with them only if its
# size is one of small…xxl with at least T5_MIN_PARAMS parameters (T5.1.1 Small has 77M).
T5_MIN_PARAMS = 7e7
TOY_NOTE = "toy model, not T5"


class ReferenceWarning(UserWarning):
    """Reference rows left out of a plot: their source is not stated, or the plotted models are
    not T5.1.1 sizes (a toy model beside T5-XXL and GPT-3 would read as a comparison)."""


def non_t5_sizes(frame: pd.DataFrame) -> list[str]:
    """The sizes of a figure frame that are no T5.1.1 size: not one of small…xxl, or fewer than
    `T5_MIN_PARAMS` parameters (toy and tiny models). Empty: the paper's points may be drawn
    beside this frame's."""
    size = frame["size"].astype(str).str.lower()
    t5 = size.isin(list(T5_PARAMS)) & frame["params"].astype(float).ge(T5_MIN_PARAMS)
    return sorted(set(frame.loc[~t5, "size"].astype(str)))


def references_for(frame: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame | None:
    """The reference rows to draw beside `frame`'s points: none unless every point is a T5.1.1
    size (`non_t5_sizes`, else a `ReferenceWarning` says why), and of those only the rows
    whose source is stated (`stated_reference`)."""
    if reference is None:
        return None
    others = non_t5_sizes(frame)
    if others:
        warnings.warn(
            f"the paper's reference points (T5-XXL, GPT-3) are left out: size(s) {others} are "
            f"no T5.1.1 size (small…xxl, >= {T5_MIN_PARAMS:.0e} parameters), and the paper's "
            "scores beside a toy model's would read as a comparison",
            ReferenceWarning,
            stacklevel=3,
        )
        return None
    return stated_reference(reference)


def toy_title(title: str, frame: pd.DataFrame) -> str:
    """`title`, and "toy model, not T5" under it when the frame holds no T5.1.1 size."""
    return f"{title}\n({TOY_NOTE})" if non_t5_sizes(frame) else title


def stated_reference(reference: pd.DataFrame) -> pd.DataFrame:
    """The reference rows whose source is stated: a row whose `split` is `unverified` (or
    empty) or whose `source` is empty is left out, with one `ReferenceWarning` naming them."""
    needed = ["method", "model", "params", "superglue", "split", "source"]
    missing = [c for c in needed if c not in reference.columns]
    if missing:
        raise KeyError(f"reference table lacks columns {missing}; see results/paper/README.md")
    split = reference["split"].fillna("").astype(str).str.strip()
    source = reference["source"].fillna("").astype(str).str.strip()
    stated = ~split.str.lower().isin(UNSTATED_SPLITS) & source.ne("")
    if not stated.all():
        skipped = [
            f"{r.method} ({r.model}): split={s!r}, source={src!r}"
            for r, s, src in zip(
                reference[~stated].itertuples(index=False),
                split[~stated],
                source[~stated],
                strict=True,
            )
        ]
        warnings.warn(
            f"reference rows without a stated source are not drawn: {'; '.join(skipped)}",
            ReferenceWarning,
            stacklevel=4,
        )
    return reference[stated]


def load_reference(path: str | Path = "results/paper/reference.csv") -> pd.DataFrame:
    """The paper's reported numbers (see results/paper/README.md for each one's source)."""
    return pd.read_csv(path)
