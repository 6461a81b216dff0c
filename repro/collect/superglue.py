"""Figure points from the results frame: which runs make a panel, and their SuperGLUE score.

`panel_runs` / `figure1_runs` select one figure's runs (every other ablation axis held at the
paper's default); `superglue_scores` and `superglue_frame` turn finished runs into figure
points: for each (size, params, axis value, seed) the mean of the 8 task scores, then mean and
std over seeds. See `superglue_frame` for how missing tasks and duplicate runs are handled.

The backbone family (the frame's `family` column: `t5`, or `causal` for a decoder-only LM; NA
or no column reads as `t5`) is the first axis: runs of different families are never averaged
together. Each family is selected by its own defaults (`FAMILY_DEFAULTS`: a causal LM's
objective is `next_token`, not `lm_adapt`), and in a frame holding more than one family the
family is a point key too (`family_groups`, `_point_keys`). A one-family frame gives the
points, and the columns, it gave before the family existed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from repro.checkpoints import model_lm_adapt_steps
from repro.collect.frame import DEFAULT_FAMILY, CollectWarning
from repro.config import FAMILIES, RELEASED_LM_ADAPT_STEPS
from repro.methods import DEFAULT_METHOD, METHODS

# The four Figure 3 panels, in the paper's order (a)-(d).
ABLATION_AXES = ("prompt_len", "init", "objective", "lm_adapt_steps")
# The paper's non-ablated setting: LM-adapted T5.1.1 (100K steps), class-label init, 100 tokens.
# `lm_adapt_steps: MODEL_LM_ADAPT_STEPS` holds each size at its own LM-adapted checkpoint: 100K
# for the T5 sizes (Google's releases), 500 for the toy world's
# (`repro.checkpoints.model_lm_adapt_steps`).
MODEL_LM_ADAPT_STEPS = "model"
PAPER_DEFAULTS: dict[str, Any] = {
    "method": DEFAULT_METHOD,  # Figure 3 is prompt tuning's; Figure 1 adds the other methods
    "prompt_len": 100,
    "init": "class_label",
    "objective": "lm_adapt",
    "lm_adapt_steps": MODEL_LM_ADAPT_STEPS,
}
# A decoder-only LM's default setting (issue 29): the same prompt, the model as pre-trained by
# next-token prediction (its final checkpoint: `lm_adapt_steps` = each size's own, e.g. Pythia's
# step143000); `instruct` (Qwen2.5-Instruct) is its objective panel's other value.
CAUSAL_DEFAULTS: dict[str, Any] = {**PAPER_DEFAULTS, "objective": "next_token"}
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"t5": PAPER_DEFAULTS, "causal": CAUSAL_DEFAULTS}
# The objective whose checkpoints count steps (the `lm_adapt_steps` axis): LM adaptation on T5,
# pre-training itself on a causal LM (Pythia's step<N> revisions).
STEPPED_OBJECTIVES = {"t5": "lm_adapt", "causal": "next_token"}
# The paper's LM-adapted backbones are Google's releases. Not an entry of PAPER_DEFAULTS: it is
# held only among LM-adapted runs, and only where a frame mixes recipes (see `panel_runs`).
PAPER_LM_ADAPT_SOURCE = "released"
SUPERGLUE_TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")


def family_groups(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`{family: its rows}` of a results frame, `t5` first, then `causal`, then any other; a
    frame without a `family` column, and a row whose family is NA, is `t5` (runs from before
    the column). A frame of one family is returned whole, as `{family: df}`."""
    if "family" not in df.columns:
        return {DEFAULT_FAMILY: df}
    family = df["family"].astype("object").where(df["family"].notna(), DEFAULT_FAMILY)
    present = sorted(set(family), key=family_rank)
    if len(present) <= 1:
        return {present[0] if present else DEFAULT_FAMILY: df}
    return {f: df[family.eq(f).to_numpy()].assign(family=f) for f in present}


def family_rank(family: Any) -> tuple[int, str]:
    """Sort key of a family: the known ones (`repro.config.FAMILIES`: t5, causal) first."""
    return (FAMILIES.index(family), "") if family in FAMILIES else (len(FAMILIES), str(family))


def panel_runs(
    df: pd.DataFrame, axis: str | None, defaults: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The runs of one figure panel: `axis` free, every other ablation axis at its default.

    A combined frame holds several sweeps, and the default setting is run in each of them; a
    panel must only see runs that differ in its own axis. An axis that takes a single value in
    `df` (e.g. a smoke sweep on a tiny model that fixes its own objective) is left unfiltered.
    For the objective panel, LM-adapted runs are held at `defaults['lm_adapt_steps']` (the
    "LM Adaptation (100K)" line; by default each size's own LM-adapted checkpoint:
    `MODEL_LM_ADAPT_STEPS`) while the other objectives keep whatever steps they record.
    `axis=None` holds every ablation axis (Figure 1: prompt tuning at the paper's setting).

    Each backbone family is selected on its own (`family_groups`), at `defaults`, by default its
    own (`FAMILY_DEFAULTS`: T5 at `PAPER_DEFAULTS`, a causal LM at `CAUSAL_DEFAULTS`, whose
    objective panel holds `next_token` runs at each size's final pre-training step).
    """
    if axis is not None and axis not in df.columns:
        raise KeyError(f"axis {axis!r} is not a column of the frame; columns: {list(df.columns)}")
    groups = family_groups(df)
    picked = [_family_panel_runs(rows, axis, f, defaults) for f, rows in groups.items()]
    return picked[0] if len(picked) == 1 else pd.concat(picked)


def _family_panel_runs(
    df: pd.DataFrame, axis: str | None, family: str, defaults: Mapping[str, Any] | None
) -> pd.DataFrame:
    """`panel_runs` of one family's runs."""
    if defaults is None:
        defaults = FAMILY_DEFAULTS.get(family, PAPER_DEFAULTS)
    stepped = STEPPED_OBJECTIVES.get(family, "lm_adapt")
    if axis == "lm_adapt_steps":
        df = span_corruption_as_step_zero(df)
    held = {k: v for k, v in defaults.items() if k != axis}
    if axis == "objective":
        held.pop("lm_adapt_steps", None)
    sel = df
    for col, value in held.items():
        if col in sel.columns and sel[col].nunique(dropna=False) > 1:
            sel = sel[sel[col].eq(_held(sel, col, value)).fillna(False).astype(bool)]
    if axis == "objective" and "lm_adapt_steps" in defaults:
        lm = sel["objective"].eq(stepped).fillna(False).astype(bool)
        if sel.loc[lm, "lm_adapt_steps"].nunique(dropna=False) > 1:
            steps = _held(sel, "lm_adapt_steps", defaults["lm_adapt_steps"])
            keep = sel["lm_adapt_steps"].eq(steps).fillna(False).astype(bool)
            sel = sel[~lm | keep]
    if axis != "lm_adapt_steps" and "lm_adapt_source" in sel.columns:
        sel = _hold_lm_adapt_source(sel, defaults.get("lm_adapt_source", PAPER_LM_ADAPT_SOURCE))
    return sel


def span_corruption_as_step_zero(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 3(d)'s 0-step point is T5.1.1 itself: an `objective=lm_adapt lm_adapt_steps=0`
    run loads the span-corruption checkpoint and formats targets as `objective=span_corruption`
    does (`repro.checkpoints.checkpoint_for`), so both are one computation (the toy world's 18 pairs
    score the same). In a frame with LM-adapted runs at more than one step count (a Figure 3(d)
    sweep), span-corruption runs count as that 0-step point, so `sweeps/fig3_all.yaml` trains
    it once, in panel (c); where the frame also holds `lm_adapt_steps=0` runs, the two are
    averaged as repeated runs of one point and seed."""
    if not {"objective", "lm_adapt_steps"} <= set(df.columns):
        return df
    lm = df["objective"].eq("lm_adapt").fillna(False).astype(bool)
    span = df["objective"].eq("span_corruption").fillna(False).astype(bool)
    if df.loc[lm, "lm_adapt_steps"].nunique() < 2 or not span.any():
        return df
    df = df.copy()
    df.loc[span, "objective"] = "lm_adapt"
    df.loc[span, "lm_adapt_steps"] = 0
    if "lm_adapt_source" in df.columns:
        df.loc[span, "lm_adapt_source"] = "none"
    return df


def _held(sel: pd.DataFrame, col: str, value: Any) -> Any:
    """The value `panel_runs` holds `col` at: `value`, or per row each size's own LM-adapted
    checkpoint for `MODEL_LM_ADAPT_STEPS`."""
    if col == "lm_adapt_steps" and value == MODEL_LM_ADAPT_STEPS:
        if "size" not in sel.columns:
            return RELEASED_LM_ADAPT_STEPS
        return sel["size"].map(model_lm_adapt_steps)
    return value


def figure1_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of Figure 1: per method (`method` column; a frame without one is prompt tuning),
    prompt tuning at the paper's default setting (`panel_runs(..., None)`) and every other
    method's runs as they are (no prompt axes; model tuning's backbone is its own: the paper
    tunes the public T5.1.1, `conf/method/model.yaml`). Figure 3's panels never see them:
    `PAPER_DEFAULTS` holds `method` at `prompt`. Each backbone family at its own defaults."""
    groups = family_groups(df)
    if len(groups) > 1:
        return pd.concat([figure1_runs(rows) for rows in groups.values()])
    if "method" not in df.columns:
        return panel_runs(df, None)
    method = df["method"].fillna(DEFAULT_METHOD)
    parts = []
    for name in dict.fromkeys(method):
        rows = df[method.eq(name)]
        if name in METHODS and METHODS[name].prompt_axes:
            rows = panel_runs(rows.assign(method=name), None, _prompt_defaults(next(iter(groups))))
        parts.append(rows)
    return pd.concat(parts) if parts else df


def _prompt_defaults(family: str = DEFAULT_FAMILY) -> dict[str, Any]:
    defaults = FAMILY_DEFAULTS.get(family, PAPER_DEFAULTS)
    return {k: v for k, v in defaults.items() if k != "method"}


def _hold_lm_adapt_source(sel: pd.DataFrame, preferred: str) -> pd.DataFrame:
    """One recipe per panel outside Figure 3(d): where LM-adapted runs come from two recipes (a
    frame holding an `lm_adapt_source=own` sweep has own runs at 100K beside the released
    ones), keep the `preferred` ones. `none` runs (span corruption, 0 steps) always stay; a
    frame without any `preferred` run is left as it is (its points are checked later)."""
    source = sel["lm_adapt_source"]
    adapted = source.ne("none").fillna(True).astype(bool)
    keep = source.eq(preferred).fillna(False).astype(bool)
    if source[adapted].nunique(dropna=False) > 1 and keep.any():
        sel = sel[~adapted | keep]
    return sel


def superglue_scores(
    df: pd.DataFrame, axis: str | None, tasks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per (size, params, axis value, seed): the SuperGLUE score of one seed (in Figure 3(d),
    per recipe too: `_point_keys`).

    Only `finished` rows of the given tasks count (failed, running, incomplete and corrupt rows
    are left out here, but stay in the run frame). Several finished runs of the same task at the
    same point and seed (the default setting is run by every sweep) are averaged first.
    A point missing any task gets `superglue` NA, its `n_tasks` and `missing_tasks` say why, and a
    `CollectWarning` lists it: a mean over fewer tasks is not a SuperGLUE score.

    Args:
        df: a results frame (`collect_runs` / `collect_wandb`).
        axis: the panel's axis column (e.g. `prompt_len`), or None for size only (Figure 1).
        tasks: the tasks to average (default the 8 SuperGLUE tasks); toy tasks work the same.

    Returns:
        One row per point and seed: keys, one column per task (its score), `n_tasks`,
        `missing_tasks`, `superglue`.

    Raises:
        KeyError: `axis` is not a column.
        ValueError: another ablation axis varies within a point (select a panel first).
    """
    tasks = list(tasks) if tasks is not None else list(SUPERGLUE_TASKS)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    if axis is not None and axis not in df.columns:
        raise KeyError(f"axis {axis!r} is not a column of the frame; columns: {list(df.columns)}")
    if axis in ("size", "params", "seed", "task"):
        raise ValueError(f"axis {axis!r} is a grouping key already; pick an ablation axis or None")
    df = _family_filled(df)
    keys = [*_point_keys(df, axis), "seed"]
    done = df[(df["status"] == "finished") & df["task"].isin(tasks)]
    if "eval_task" in done.columns:  # zero-shot transfer rows (repro.transfer) score elsewhere
        own = done["eval_task"].isna() | done["eval_task"].eq(done["task"])
        done = done[own.fillna(True).astype(bool)]
    _check_single_setting(done, keys, axis)

    per_task = done.groupby([*keys, "task"], dropna=False, sort=True)["score"].mean()
    wide = per_task.unstack("task").reindex(columns=tasks) if len(done) else None
    if wide is None:
        return pd.DataFrame(columns=[*keys, *tasks, "n_tasks", "missing_tasks", "superglue"])
    wide.columns.name = None
    present = wide.notna()
    out = wide.reset_index()
    out["n_tasks"] = present.sum(axis=1).to_numpy()
    out["missing_tasks"] = present.apply(
        lambda r: ",".join(t for t in tasks if not r[t]), axis=1
    ).to_numpy()
    complete = out["n_tasks"] == len(tasks)
    out["superglue"] = wide.mean(axis=1).to_numpy()
    out.loc[~complete, "superglue"] = float("nan")
    if (~complete).any():
        lines = [
            f"  {dict(zip(keys, r[keys], strict=True))}: missing {r['missing_tasks']}"
            for _, r in out[~complete].iterrows()
        ]
        warnings.warn(
            f"{len(lines)} point(s) lack finished runs of some tasks and are left out of the "
            "SuperGLUE mean:\n" + "\n".join(lines),
            CollectWarning,
            stacklevel=2,
        )
    return out


def superglue_frame(
    df: pd.DataFrame, axis: str | None, tasks: Sequence[str] | None = None, ddof: int = 1
) -> pd.DataFrame:
    """Figure points: per (size, params, axis value) mean and std of the SuperGLUE score over seeds.

    Each seed's score is the mean of its task scores (`superglue_scores`); seeds missing a task
    are excluded from the mean and counted in `n_incomplete` (a point with none left has NA
    `mean`). `std` is the sample std (`ddof=1`, NA for a single seed); pass `ddof=0` for the
    population std.

    Returns:
        Columns `size`, `params`, `<axis>` (if any), `mean`, `std`, `n_seeds`, `n_incomplete`,
        sorted by params then axis value; for `lm_adapt_steps` (Figure 3(d)) also
        `lm_adapt_source` after the axis, when the runs have it: one point per recipe. Runs of
        more than one backbone family (`family_groups`) add `family` as the first column, and
        the points are sorted by family first: t5, then causal.
    """
    seeds = superglue_scores(df, axis, tasks)
    keys = _point_keys(_family_filled(df), axis)
    if seeds.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n_seeds", "n_incomplete"])
    grouped = seeds.groupby(keys, dropna=False, sort=False)["superglue"]
    out = pd.DataFrame(
        {
            "mean": grouped.mean(),
            "std": grouped.std(ddof=ddof),
            "n_seeds": grouped.count(),
            "n_incomplete": grouped.apply(lambda s: int(s.isna().sum())),
        }
    ).reset_index()
    if keys[0] != "family":
        return out.sort_values(["params", *keys[2:]], kind="stable").reset_index(drop=True)
    out["_rank"] = out["family"].map(family_rank)
    out = out.sort_values(["_rank", "params", *keys[3:]], kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)


def _family_filled(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with an NA family read as `t5`, where the frame holds more than one family (the
    only case where the family is a point key)."""
    if len(family_groups(df)) <= 1:
        return df
    return df.assign(
        family=df["family"].astype("object").where(df["family"].notna(), DEFAULT_FAMILY)
    )


def _point_keys(df: pd.DataFrame, axis: str | None) -> list[str]:
    """What tells one figure point from another: the backbone family (where the frame holds
    more than one), size, params, the axis; in Figure 3(d) also the LM-adaptation recipe, so
    that a released and an own 100K point are never averaged."""
    several = axis != "family" and len(family_groups(df)) > 1
    keys = [*(["family"] if several else []), "size", "params", *([axis] if axis else [])]
    if axis == "lm_adapt_steps" and "lm_adapt_source" in df.columns:
        keys.append("lm_adapt_source")
    return keys


def _check_single_setting(done: pd.DataFrame, keys: list[str], axis: str | None) -> None:
    """Raise if one point would average runs that differ in another ablation axis (or, outside
    Figure 3(d), in the LM-adaptation recipe)."""
    others = [a for a in (*ABLATION_AXES, "lm_adapt_source") if a not in keys and a in done.columns]
    if done.empty or not others:
        return
    counts = done.groupby([*keys, "task"], dropna=False)[others].nunique(dropna=False)
    bad = counts[(counts > 1).any(axis=1)]
    if not bad.empty:
        cols = [c for c in others if (bad[c] > 1).any()]
        raise ValueError(
            f"runs at the same point differ in {cols} (first: {dict(zip([*keys, 'task'], bad.index[0], strict=True))}); "
            f"select one panel's runs first, e.g. panel_runs(df, {axis!r})"
        )
