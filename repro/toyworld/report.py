"""What the toy panels show: per-panel points (mean ± std over seeds), the paper's four effects
checked on them, how often each checkpoint's tuned prompt makes it emit a sentinel or a string
that is no label, the combined run frame and a 2x2 grid of the panels.

    python -m repro.collect multirun/toy_figure3 -o results/toy/runs.csv
    python -m repro.toyworld report results/toy/runs.csv -o results/toy
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from omegaconf import OmegaConf

from repro.collect.frame import CollectWarning, load_frame
from repro.collect.superglue import ABLATION_AXES, panel_runs, superglue_frame
from repro.plots.ablations import plot_grid, plot_panel
from repro.plots.drawing import save_figure
from repro.tasks import get_task, task_names
from repro.tasks.base import data_dir_for, ensure_generated

PANELS = ("fig3a_prompt_len", "fig3b_init", "fig3c_objective", "fig3d_lm_adapt_steps")
AXES = {
    "fig3a_prompt_len": "prompt_len",
    "fig3b_init": "init",
    "fig3c_objective": "objective",
    "fig3d_lm_adapt_steps": "lm_adapt_steps",
}
TASKS = ("toy_review", "toy_fact")
SIZES = ("toy_small", "toy_base", "toy_large", "toy_xl")  # repro.toyworld.build.SIZES' ladder
# Issue 19's test of a panel point with room to move: its mean lies above the majority class + 5
# and below 95 (a point outside has no margin for an ablation to show in).
MARGIN = (5.0, 95.0)


def panel_points(runs: pd.DataFrame, axis: str, tasks: Sequence[str] = TASKS) -> pd.DataFrame:
    """Per (size, axis value): mean ± std over seeds of the mean over ``tasks``."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollectWarning)
        return superglue_frame(panel_runs(runs, axis), axis, tasks=tasks)


def _point(points: pd.DataFrame, axis: str, size: str, value: Any) -> tuple[float, float]:
    row = points[(points["size"] == size) & (points[axis].astype(str) == str(value))]
    if row.empty:
        return float("nan"), float("nan")
    return float(row["mean"].iloc[0]), float(row["std"].iloc[0])


VERDICTS = ("n/a", "no", "within noise", "yes")  # weakest first


def dev_examples(run_dir: str | Path, task):
    """The dev examples a finished run was scored on, read where the run read them: its own
    ``task.data_dir``, else (a generated toy task) ``<paths.cache_dir>/toy-data/<task>``,
    generated there again if the cache was cleared — never the hub."""
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    tasks = task_names(cfg.task.name)  # a data_dir shared by several: the task's own sub-dir
    data_dir = data_dir_for(task, cfg.task.data_dir, cfg.paths.cache_dir, tasks=tasks)
    if task.generate is not None and not cfg.task.data_dir:
        ensure_generated(task, data_dir)
    return task.examples(task.eval_split, data_dir)


def majority_baseline(runs: pd.DataFrame, tasks: Sequence[str] = TASKS) -> float:
    """Mean over ``tasks`` of the dev accuracy of always answering the most frequent class."""
    rates = []
    for name in tasks:
        run_dir = Path(runs.loc[runs["task"] == name, "run_dir"].iloc[0])
        task = get_task(name)
        gold = [ex.meta["label"] for ex in dev_examples(run_dir, task)]
        rates.append(100 * max(gold.count(c) for c in set(gold)) / len(gold))
    return sum(rates) / len(rates)


def verdict(
    better: tuple[float, float], worse: tuple[float, float], floor: float | None = None
) -> str:
    """ "yes" if ``better``'s mean exceeds ``worse``'s by more than their two stds together
    (the ±1 std bars do not overlap), "within noise" if it exceeds it by less, "no" if it does
    not, "n/a" if either point is missing. With ``floor`` (the majority-class score), a ``better``
    no higher than it is "no": always answering the majority class beats nothing."""
    (m1, s1), (m2, s2) = better, worse
    if math.isnan(m1) or math.isnan(m2):
        return "n/a"
    if floor is not None and m1 <= floor + 1e-9:
        return "no"
    if m1 <= m2:
        return "no"
    return (
        "yes"
        if m1 - m2 > (0 if math.isnan(s1) else s1) + (0 if math.isnan(s2) else s2)
        else "within noise"
    )


def effects(
    frames: dict[str, pd.DataFrame], invalid: pd.DataFrame | None, floor: float | None = None
) -> list[dict[str, Any]]:
    """The paper's four qualitative effects, each as measured numbers and whether it holds
    (``verdict``; ``floor`` = the majority-class score of the task mean)."""
    out = []
    if "fig3a_prompt_len" in frames:
        pts = panel_points(frames["fig3a_prompt_len"], "prompt_len")
        for size in SIZES:
            one = _point(pts, "prompt_len", size, 1)
            out.append(
                {
                    "effect": "length >= 20 beats length 1",
                    "probe_of": ("lm_adapt",),
                    "size": size,
                    "measured": f"p=1: {one[0]:.1f} ± {one[1]:.1f}; "
                    + "; ".join(
                        f"p={p}: {m:.1f} ± {s:.1f}"
                        for p in (20, 100, 150)
                        for m, s in [_point(pts, "prompt_len", size, p)]
                    ),
                    # every length >= 20 against length 1; the weakest comparison decides
                    "holds": min(
                        (
                            verdict(_point(pts, "prompt_len", size, p), one, floor)
                            for p in (20, 100, 150)
                        ),
                        key=VERDICTS.index,
                    ),
                }
            )
    if "fig3b_init" in frames:
        pts = panel_points(frames["fig3b_init"], "init")
        for size in SIZES:
            cl, ru = (
                _point(pts, "init", size, "class_label"),
                _point(pts, "init", size, "random_uniform"),
            )
            sv = _point(pts, "init", size, "sampled_vocab")
            out.append(
                {
                    "effect": "class-label init beats random uniform",
                    "probe_of": ("lm_adapt",),
                    "size": size,
                    "measured": f"class label {cl[0]:.1f} ± {cl[1]:.1f}; sampled vocab "
                    f"{sv[0]:.1f} ± {sv[1]:.1f}; random uniform {ru[0]:.1f} ± {ru[1]:.1f}",
                    "holds": verdict(cl, ru, floor),
                }
            )
    if "fig3c_objective" in frames:
        pts = panel_points(frames["fig3c_objective"], "objective")
        for size in SIZES:
            lm, sc, scs = (
                _point(pts, "objective", size, o)
                for o in ("lm_adapt", "span_corruption", "span_corruption_sentinel")
            )
            out.append(
                {
                    "effect": "LM adaptation beats span corruption (score)",
                    "probe_of": ("span_corruption", "lm_adapt"),
                    "size": size,
                    "measured": f"LM adaptation {lm[0]:.1f} ± {lm[1]:.1f}; span corruption "
                    f"{sc[0]:.1f} ± {sc[1]:.1f}; + sentinel {scs[0]:.1f} ± {scs[1]:.1f}",
                    "holds": verdict(lm, sc, floor),
                }
            )
    if invalid is not None and not invalid.empty:
        for size in SIZES:
            sub = invalid[invalid["size"] == size]
            # per seed: mean over the two tasks; then mean and std over seeds
            per_seed = sub.groupby(["objective", "seed"])[["invalid_pct", "sentinel_pct"]].mean()
            rates = per_seed.groupby("objective").mean()
            rates["invalid_sd"] = per_seed.groupby("objective")["invalid_pct"].std()
            if rates.empty:
                continue

            def r(obj: str, col: str, rates: pd.DataFrame = rates) -> float:
                return float(rates.loc[obj, col]) if obj in rates.index else float("nan")

            out.append(
                {
                    "effect": "span corruption emits sentinels / invalid labels, LM adaptation not",
                    "probe_of": ("span_corruption", "lm_adapt"),
                    "size": size,
                    "measured": "invalid (sentinel) % of dev outputs: span corruption "
                    f"{r('span_corruption', 'invalid_pct'):.1f} ({r('span_corruption', 'sentinel_pct'):.1f}); "
                    f"+ sentinel {r('span_corruption_sentinel', 'invalid_pct'):.1f} "
                    f"({r('span_corruption_sentinel', 'sentinel_pct'):.1f}); LM adaptation "
                    f"{r('lm_adapt', 'invalid_pct'):.1f} ({r('lm_adapt', 'sentinel_pct'):.1f})",
                    "holds": verdict(
                        (r("span_corruption", "invalid_pct"), r("span_corruption", "invalid_sd")),
                        (r("lm_adapt", "invalid_pct"), r("lm_adapt", "invalid_sd")),
                    ),
                }
            )
    if "fig3d_lm_adapt_steps" in frames:
        pts = panel_points(frames["fig3d_lm_adapt_steps"], "lm_adapt_steps")
        for size in SIZES:
            vals = [_point(pts, "lm_adapt_steps", size, n) for n in (0, 50, 250, 500)]
            out.append(
                {
                    "effect": "more LM-adaptation steps help",
                    "probe_of": ("span_corruption", "lm_adapt_*"),
                    "size": size,
                    "measured": "; ".join(
                        f"{n}: {m:.1f} ± {s:.1f}"
                        for n, (m, s) in zip((0, 50, 250, 500), vals, strict=True)
                    ),
                    # the longest adaptation against none, and against the shortest
                    "holds": min(
                        (verdict(vals[-1], vals[0], floor), verdict(vals[-1], vals[1], floor)),
                        key=VERDICTS.index,
                    ),
                }
            )
    return out


def margin(points: dict[str, pd.DataFrame], floor: float) -> pd.DataFrame:
    """Per panel and size: how many of its points lie inside (majority + 5, 95) — issue 19's
    "room to move" — and the lowest and highest point.

    Args:
        points: ``{panel: panel_points(...)}``.
        floor: the majority-class score of the task mean.
    """
    low, high = floor + MARGIN[0], MARGIN[1]
    rows = []
    for panel, pts in points.items():
        present = set(pts["size"])
        for size in [*(s for s in SIZES if s in present), *sorted(present - set(SIZES))]:
            means = pts.loc[pts["size"] == size, "mean"]
            inside = means.between(low, high, inclusive="neither")
            rows.append(
                {
                    "panel": panel,
                    "size": size,
                    "points": len(means),
                    "inside": int(inside.sum()),
                    "lowest": round(float(means.min()), 1),
                    "highest": round(float(means.max()), 1),
                }
            )
    return pd.DataFrame(rows)


def probe_beside(manifest: dict[str, Any], size: str, probe_of: Sequence[str]) -> str:
    """The manifest's probe of the checkpoints an effect compares, for its row of effects.md:
    ``lm_adapt`` = the longest LM adaptation (the toy default), ``lm_adapt_*`` = every one."""
    model = manifest.get("models", {}).get(size)
    if not model:
        return "-"
    steps = sorted(int(k.rsplit("_", 1)[1]) for k in model["probe"] if k.startswith("lm_adapt_"))
    keys = []
    for name in probe_of:
        if name == "lm_adapt":
            keys += [f"lm_adapt_{steps[-1]}"] if steps else []
        elif name == "lm_adapt_*":
            keys += [f"lm_adapt_{n}" for n in steps]
        else:
            keys.append(name)
    parts = []
    for key in keys:
        scores = model["probe"].get(key)
        if scores is None:
            continue
        label = "SC" if key == "span_corruption" else f"LM {key.rsplit('_', 1)[1]}"
        rare = f" (rare {scores['review_rare']:.1f})" if "review_rare" in scores else ""
        parts.append(f"{label}: review {scores['review']:.1f}{rare}, fact {scores['fact']:.1f}")
    return "; ".join(parts) or "-"


def panel_frames(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs of each toy panel from the shared frame of ``multirun/toy_figure3``.

    Each panel holds the other axes at the defaults: the toy models' own LM-adapted checkpoint
    is ``lm_adapt_steps=500``, which is also panel (d)'s last point (one run serves both).
    """
    frames = {}
    for panel, axis in AXES.items():
        sel = panel_runs(runs, axis)
        if sel[axis].dropna().nunique() > 1:
            frames[panel] = sel
    return frames


def invalid_outputs(runs: pd.DataFrame, max_examples: int | None = None) -> pd.DataFrame:
    """Re-decode each finished run's dev set with its best prompt; count non-label outputs.

    Returns:
        One row per run: size, objective, lm_adapt_steps, task, seed, accuracy, invalid_pct
        (outputs that are no label string, after the sentinel variant's <extra_id_0> is
        stripped, as the scorer does), sentinel_pct (outputs holding any ``<extra_id_*>``) and
        one example output.
    """
    import torch
    from transformers import AutoTokenizer

    from repro.backbone import load_backbone
    from repro.data import encode
    from repro.evaluate import evaluate
    from repro.model import PromptedT5
    from repro.objectives import add_sentinel
    from repro.prompts import SoftPrompt, load_prompt
    from repro.tasks import get_task
    from repro.tasks.base import class_id

    rows, cache = [], {}
    for run_dir in runs.loc[runs["status"] == "finished", "run_dir"]:
        run_dir = Path(run_dir)
        result = json.loads((run_dir / "result.json").read_text())
        cfg = json.loads((run_dir / "fingerprint.json").read_text())
        ckpt = result["checkpoint"]
        if ckpt not in cache:
            cache[ckpt] = (
                load_backbone(ckpt, dtype="float32").eval(),
                AutoTokenizer.from_pretrained(ckpt),
            )
        backbone, tokenizer = cache[ckpt]
        task = get_task(result["task"])
        examples = dev_examples(run_dir, task)[:max_examples]
        sentinel = result["objective"] == "span_corruption_sentinel"
        placement = cfg["objective"]["sentinel_placement"]
        inputs = add_sentinel(examples, placement) if sentinel else examples
        tokens = encode(inputs, tokenizer, task.max_input_length, task.max_target_length)
        prompt, _ = load_prompt(run_dir / "best")
        model = PromptedT5(backbone, SoftPrompt(prompt)).eval()
        with torch.no_grad():
            metrics, preds = evaluate(
                model, tokenizer, task, examples, tokens.input_ids, sentinel=sentinel,
                max_new_tokens=task.max_target_length, batch_size=100,
            )  # fmt: skip
        rows.append(
            {
                "size": result["size"],
                "objective": result["objective"],
                "lm_adapt_steps": result.get("lm_adapt_steps"),
                "task": result["task"],
                "seed": result["seed"],
                "accuracy": metrics.get("accuracy"),
                "invalid_pct": 100 * sum(class_id(task, p) < 0 for p in preds) / len(preds),
                "sentinel_pct": 100 * sum("<extra_id_" in p for p in preds) / len(preds),
                "example": preds[0],
            }
        )
    return pd.DataFrame(rows)


def probe_lines(manifest: dict[str, Any]) -> list[str]:
    """Markdown: the manifest's zero-shot probe of every shipped checkpoint (probe.py)."""

    def in_corpus(scores: dict[str, Any]) -> str:
        c = scores.get("in_corpus")
        return f"{c['review']:.1f} / {c['fact']:.1f}" if c else "-"

    def rare(scores: dict[str, Any]) -> str:
        return f"{scores['review_rare']:.1f}" if "review_rare" in scores else "-"

    rows = [
        f"| {size} | {key} | {scores['review']:.1f} | {rare(scores)} | {scores['fact']:.1f} "
        f"| {in_corpus(scores)} |"
        for size, m in manifest.get("models", {}).items()
        for key, scores in m.get("probe", {}).items()
    ]
    if not rows:
        return []
    return [
        "",
        "What each frozen checkpoint knows before any prompt tuning (repro/toyworld/probe.py,"
        " recorded in the manifest): zero-shot accuracy (%) of ranking the two label words after"
        " a review sentence / a passage and question, chance 50 (rare: the review items whose"
        " adjective is one of the 3 rarest of its lexicon, which toy_review never trains on);"
        " and, for span-corruption checkpoints, the same ranking where span corruption masked a"
        " label word in unseen corpus text (review / fact).",
        "",
        "| size | checkpoint | review | review, rare | fact | in corpus |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def figures(points: dict[str, pd.DataFrame], out_dir: str | Path) -> dict[str, list[Path]]:
    """Each toy panel (``figure3<letter>_<axis>``) and the panels together (``figure3``: only
    the panels present, the paper's 2x2 when all four are), PNG and PDF, drawn by
    ``repro.plots`` (which marks them "toy model, not T5": each panel's file under its title,
    the grid once under the figure's).

    Args:
        points: ``{panel: panel_points(...)}`` for the panels of ``PANELS`` present.
    """
    ylabel = f"Mean score ({', '.join(TASKS)})"
    ordered = {AXES[p]: points[p] for p in PANELS if p in points}
    written = {}
    for axis, pts in ordered.items():
        fig = plot_panel(pts, axis, ylabel=ylabel)
        name = f"figure3{'abcd'[ABLATION_AXES.index(axis)]}_{axis}"
        written[name] = save_figure(fig, out_dir, name)
        plt.close(fig)
    if ordered:
        fig = plot_grid(
            ordered,
            ylabel=ylabel,
            suptitle="Toy world: suite-built toy T5s on a CPU",  # + "(toy model, not T5)"
        )
        written["figure3"] = save_figure(fig, out_dir, "figure3")
        plt.close(fig)
    return written


def report(
    frame: str | Path = "results/toy/runs.csv", out_dir: str | Path = "results/toy"
) -> list[dict[str, Any]]:
    """From the run frame of the toy sweeps: the panels and their grid (``figures``, PNG and
    PDF), the figure points (``points.csv``), the invalid-output counts of panel (c) and the
    paper's four effects as measured (``effects.csv``, ``effects.md``); returns the effects."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = load_frame(frame)
    frames = panel_frames(runs)
    points = {panel: panel_points(sel, AXES[panel]) for panel, sel in frames.items()}
    figures(points, out_dir)
    if points:
        table = [
            pts.assign(panel=panel, value=pts[AXES[panel]].astype(str)).drop(columns=[AXES[panel]])
            for panel, pts in points.items()
        ]
        pd.concat(table, ignore_index=True).to_csv(out_dir / "points.csv", index=False)
        # the same points per task: a point is the mean of the two tasks' accuracies
        by_task = [
            panel_points(frames[panel], AXES[panel], tasks=(task,))
            .assign(panel=panel, task=task, value=lambda f, a=AXES[panel]: f[a].astype(str))
            .drop(columns=[AXES[panel]])
            for panel in points
            for task in TASKS
        ]
        pd.concat(by_task, ignore_index=True).to_csv(out_dir / "points_by_task.csv", index=False)
    invalid = None
    if "fig3c_objective" in frames:
        invalid = invalid_outputs(frames["fig3c_objective"])
        invalid.to_csv(out_dir / "invalid_outputs.csv", index=False)
    floor = majority_baseline(runs)
    found = effects(frames, invalid, floor)
    from repro.toyworld.build import DEFAULT_OUT

    manifest = json.loads((DEFAULT_OUT / "manifest.json").read_text())
    for e in found:
        e["probe"] = probe_beside(manifest, e["size"], e.pop("probe_of"))
    table = pd.DataFrame(found)
    table.to_csv(out_dir / "effects.csv", index=False)
    lines = [
        f"Majority-class score (mean over {', '.join(TASKS)}): {floor:.2f}",
        "",
        "| effect | size | measured (mean ± std over 3 seeds) | holds | probe of the frozen "
        "checkpoints (SC = span corruption, LM n = LM-adapted n steps; chance 50) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['effect']} | {e['size']} | {e['measured']} | {e['holds']} | {e['probe']} |"
        for e in found
    ]
    if points:
        room = margin(points, floor)
        room.to_csv(out_dir / "margin.csv", index=False)
        lines += [
            "",
            f"Room to move: points of each panel and size whose mean lies inside "
            f"({floor + MARGIN[0]:.2f}, {MARGIN[1]:.0f}), the majority class + {MARGIN[0]:.0f}"
            " to 95.",
            "",
            "| panel | size | inside / points | lowest | highest |",
            "|---|---|---|---|---|",
            *(
                f"| {r.panel} | {r.size} | {r.inside} / {r.points} | {r.lowest:.1f} "
                f"| {r.highest:.1f} |"
                for r in room.itertuples()
            ),
        ]
    lines += probe_lines(manifest)
    (out_dir / "effects.md").write_text("\n".join(lines) + "\n")
    return found
