"""A sweep made of panels: one command for a whole figure, every distinct run once.

The four panels of Figure 3 share runs: the paper's default setting (prompt length 100,
class-label init, LM-adapted 100K) is a point of panels (a), (b) and (c) and of (d) at 100K.
Launched one file at a time, each panel trains it again in its own directory. A panel sweep
(``hydra/sweeper=panels``, ``sweeps/fig3_all.yaml``) lists each panel's axes; the sweeper expands
every panel the way Hydra's basic sweeper expands one (the cartesian product of
``hydra.sweeper.params``, the axes all panels share, the panel's own axes and the command line,
later ones winning on the same key), then keeps each run directory once, in order:

    panels: fig3a_prompt_len 75, fig3b_init 45, fig3c_objective 45, fig3d_lm_adapt_steps 60 jobs
    = 225 listed, ... distinct: ... duplicate(s) dropped (... run(s) listed by more than one
    panel, each run once)

Two jobs are the same run when they name the same run directory (``hydra.sweep.dir`` /
``hydra.sweep.subdir``), the suite's identity of a run: a relaunch skips or resumes whatever
that directory holds. If two panels name one directory but configure it differently (their
fingerprints, :func:`repro.rundir.fingerprint`, differ), the second would be refused at launch;
the sweep is refused before anything runs instead (:class:`PanelClash`), naming both jobs.

``repro.cost`` expands the same file the same way (:func:`expand_panels`,
:func:`distinct_jobs`) and prices the listed jobs against the distinct ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


@dataclass(frozen=True)
class PanelJob:
    """One distinct job of a panel sweep: its overrides (those of the first panel that lists
    it) and every panel that lists it."""

    overrides: tuple[str, ...]
    panels: tuple[str, ...]


class PanelClash(ValueError):
    """Two panels name one run directory with different configs."""


def check_panels(panels: Any) -> dict[str, dict[str, str]]:
    """``hydra.sweeper.panels`` as plain dicts: a non-empty mapping of panel name → axes
    (key → comma-separated values, as in ``hydra.sweeper.params``)."""
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError(
            "hydra.sweeper.panels must map each panel's name to its axes, e.g. "
            "{fig3a_prompt_len: {prompt_len: '1,5,20,100,150'}}; got "
            f"{panels!r}"
        )
    checked = {}
    for name, axes in panels.items():
        if not isinstance(axes, Mapping) or not axes:
            raise ValueError(
                f"hydra.sweeper.panels.{name} must map at least one key to its values "
                f"(e.g. {{prompt_len: '1,5,20'}}); got {axes!r}"
            )
        checked[str(name)] = {str(k): str(v) for k, v in axes.items()}
    return checked


def expand_panels(
    panels: Mapping[str, Mapping[str, Any]],
    shared: Mapping[str, Any] | None,
    arguments: Sequence[str],
) -> list[tuple[str, list[str]]]:
    """Every job each panel lists, in panel order: ``(panel, overrides)``.

    A panel's jobs are the cartesian product of ``shared`` (the axes of every panel), the
    panel's own axes, then ``arguments`` (the command line); a later one wins on the same key,
    as in Hydra's basic sweeper, so ``model=small seed=0`` narrows every panel."""
    parser = OverridesParser.create()
    listed = []
    for name, axes in check_panels(panels).items():
        params = {**(shared or {}), **axes}
        args = [f"{k}={v}" for k, v in params.items()] + list(arguments)
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(args), max_batch_size=None)
        listed += [(name, job) for job in jobs]
    return listed


def distinct_jobs(
    listed: Sequence[tuple[str, Sequence[str]]],
    run_dir: Callable[[Sequence[str]], str],
    fingerprint: Callable[[Sequence[str]], Any],
) -> list[PanelJob]:
    """The listed jobs with each run directory once, in first-listed order.

    ``run_dir(overrides)`` names a job's directory; ``fingerprint(overrides)`` (called only for
    jobs that share one) says what it would hold. Raises :class:`PanelClash` if two jobs share a
    directory but not a fingerprint."""
    first: dict[str, int] = {}  # run dir -> index into kept
    kept: list[tuple[tuple[str, ...], list[str], str]] = []  # (overrides, panels, first panel)
    prints: dict[str, Any] = {}
    for panel, overrides in listed:
        where = run_dir(overrides)
        if where not in first:
            first[where] = len(kept)
            kept.append((tuple(overrides), [panel], panel))
            continue
        held, panels, first_panel = kept[first[where]]
        if where not in prints:
            prints[where] = fingerprint(held)
        if fingerprint(overrides) != prints[where]:
            raise PanelClash(
                f"the jobs `{' '.join(held)}` (panel {first_panel}) and `{' '.join(overrides)}` "
                f"(panel {panel}) both name the run directory {where} with different configs; "
                "give one of them another `name` or make their settings agree"
            )
        if panel not in panels:
            panels.append(panel)
    return [PanelJob(overrides, tuple(panels)) for overrides, panels, _ in kept]


def describe_panels(listed: Sequence[tuple[str, Sequence[str]]], jobs: Sequence[PanelJob]) -> str:
    """What the panel sweeper prints before it launches: the jobs each panel lists, how many
    are distinct, how many duplicates were dropped."""
    counts: dict[str, int] = {}
    for panel, _ in listed:
        counts[panel] = counts.get(panel, 0) + 1
    per_panel = ", ".join(f"{name} {n}" for name, n in counts.items())
    shared = sum(1 for job in jobs if len(job.panels) > 1)
    return (
        f"panels: {per_panel} jobs = {len(listed)} listed, {len(jobs)} distinct: "
        f"{len(listed) - len(jobs)} duplicate(s) dropped ({shared} run(s) listed by more than "
        "one panel, each run once)"
    )
