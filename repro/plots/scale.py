"""Figure 1, the scale figure: a line per method (model tuning, multi-task model tuning, prompt
tuning) against model size, with the paper's reference points beside T5.1.1 sizes; once per
backbone family (`repro.plots.family`: `figure1_<family>` where the frame holds several).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from repro.collect.superglue import family_groups, figure1_runs, superglue_frame
from repro.methods import DEFAULT_METHOD, METHODS
from repro.plots.drawing import (
    Line,
    check_frame,
    draw,
    frame_score_label,
    no_points_reason,
    save_figure,
    score_label,
)
from repro.plots.family import (
    FAMILY_STYLES,
    T5,
    draw_per_family,
    families_of,
    family_file,
    family_rows,
    family_title,
)
from repro.plots.reference import non_t5_sizes, references_for

# Figure 1: one colour per method (the paper's legend order: model tuning lines first).
METHOD_COLORS = {"model": "C3", "model_multitask": "C1", "prompt": "C0", "lora": "C2"}


def plot_figure1(
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    ax: Axes | None = None,
    ylabel: str | None = None,
    family: str | None = None,
) -> Figure:
    """Figure 1: a line per method (mean ± std over seeds) vs T5 size, with the paper's points.

    The lines are the paper's: "Model Tuning", "Model Tuning (Multi-task)", "Prompt Tuning"
    (`repro.methods.METHODS` labels; a frame without a `method` column is prompt tuning). A
    frame of other sizes (toy, tiny: `non_t5_sizes`) is drawn without the paper's points, with
    a `ReferenceWarning`, and labelled "toy model, not T5" once, in its title (its legend
    names the methods alone; beside T5.1.1 sizes each says "(ours)", apart from the paper's).

    Args:
        frame: `superglue_frame(figure1_runs(runs), "method")`: one row per method and size.
        reference: `results/paper/reference.csv` (GPT-3 prompt design, T5-XXL model tuning and
            prompt tuning as the paper reports them).
        ylabel: default `frame_score_label` ("SuperGLUE Score" only for T5.1.1 sizes).
        family: the backbone family of a frame without a `family` column: given, the title
            names it ("decoder-only (causal) backbones"). A frame of several families draws a
            line per method and family, the family in its label ("[causal]") and line style.
    """
    check_frame(frame, ["size", "params", "mean", "std"])
    if "method" not in frame.columns:
        frame = frame.assign(method=DEFAULT_METHOD)
    frame = frame.assign(method=frame["method"].fillna(DEFAULT_METHOD))
    families = families_of(frame, family)
    several = len(families) > 1
    if frame[["family"] * several + ["method", "params"]].duplicated().any():
        raise ValueError(
            "Figure 1 needs one point per size (and method), but some have several rows; build the "
            'frame with superglue_frame(figure1_runs(runs), "method")'
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 4.2))
    fig = ax.figure
    drawn = frame[frame["mean"].notna()].sort_values("params")
    toy = bool(non_t5_sizes(drawn))
    order = [m for m in METHOD_COLORS if m in set(drawn["method"])]
    order += sorted(set(drawn["method"]) - set(order))  # a method added later (e.g. LoRA)
    lines = []
    for i, method in enumerate(order):
        name = METHODS[method].label if method in METHODS else method
        label = name if toy else f"{name} (ours)"  # a toy frame says so once, in the title
        color = METHOD_COLORS.get(method, f"C{(i + 4) % 10}")
        rows = drawn[drawn["method"] == method]
        if not several:
            lines.append(Line(label, rows, color))
            continue
        for fam in families:  # never a line through two families' points
            style = FAMILY_STYLES.get(fam, ("--", "s"))
            if len(family_rows(rows, fam)):
                lines.append(Line(f"{label} [{fam}]", family_rows(rows, fam), color, *style))
    only_prompt = order in ([], [DEFAULT_METHOD])
    title = (
        "Figure 1: prompt tuning vs model size" if only_prompt else "Figure 1: tuning vs model size"
    )
    draw(
        ax,
        lines,
        references_for(drawn, reference),
        legend_title="Method",
        title=family_title(title, drawn, family),
        ylabel=ylabel if ylabel is not None else frame_score_label(frame),
    )
    return fig


def figure1_frame(frame_runs: pd.DataFrame, tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Figure 1's points: per method and size, the mean ± std over seeds of the task mean."""
    runs = figure1_runs(frame_runs)
    if "method" not in runs.columns:
        return superglue_frame(runs, None, tasks=tasks)
    return superglue_frame(runs, "method", tasks=tasks)


def figure1(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    reference: pd.DataFrame,
    *,
    tasks: Sequence[str] | None = None,
) -> list[Path]:
    """Figure 1 from a run frame: a line per method (`figure1_runs`: prompt tuning at the
    paper's default setting, model tuning and multi-task model tuning) vs size; writes PNG+PDF
    (`figure1.png`, `.pdf`; of several backbone families, each family's: `figure1_by_family`).

    Raises:
        ValueError: no size has a point to draw (`no_points_reason` says why).
    """
    written = figure1_by_family(frame_runs, out_dir, reference, tasks=tasks)
    return [path for paths in written.values() for path in paths]


def figure1_names(frame_runs: pd.DataFrame) -> list[str]:
    """The files (no suffix) `figure1` writes: `figure1`, or `figure1_<family>` per family."""
    groups = family_groups(frame_runs)
    return [family_file("figure1", f, len(groups) > 1) for f in groups]


def figure1_by_family(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    reference: pd.DataFrame,
    *,
    tasks: Sequence[str] | None = None,
) -> dict[str, list[Path]]:
    """`figure1`, as `{name: [png, pdf]}`: `{"figure1": ...}` for a frame of one backbone
    family, else one figure per family (`figure1_t5`, `figure1_causal`; a family without a
    point is left out with a warning)."""
    groups = family_groups(frame_runs)
    if len(groups) == 1:
        family = next(iter(groups))
        return {"figure1": _figure1(frame_runs, out_dir, reference, tasks, family, "figure1")}

    def draw(family: str, runs: pd.DataFrame) -> dict[str, list[Path]]:
        name = family_file("figure1", family, True)
        return {name: _figure1(runs, out_dir, reference, tasks, family, name, named=True)}

    return draw_per_family(groups, draw, "Figure 1")


def _figure1(
    frame_runs: pd.DataFrame,
    out_dir: str | Path,
    reference: pd.DataFrame,
    tasks: Sequence[str] | None,
    family: str,
    name: str,
    *,
    named: bool = False,
) -> list[Path]:
    """Figure 1 of one family's runs, titled with the family if `named` or not T5."""
    frame = figure1_frame(frame_runs, tasks)
    if not frame["mean"].notna().any():
        raise ValueError(no_points_reason(frame_runs, tasks))
    shown = family if named or family != T5 else None
    fig = plot_figure1(frame, reference, ylabel=score_label(tasks), family=shown)
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths
