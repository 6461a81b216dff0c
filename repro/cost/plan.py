"""The jobs a command launches, expanded as its sweeper expands them: each job's overrides and
validated config (Hydra's basic sweeper, or the panel sweeper's distinct jobs), composed without
running anything (the config groups once per combination: :mod:`repro.compose`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from repro import rundir  # also registers the run_name resolver
from repro.compose import GroupComposer
from repro.config import CONF_DIR, Config, register_configs
from repro.estimate import estimate
from repro.methods import check_method_overrides
from repro.panels import describe_panels, distinct_jobs, expand_panels
from repro.resolve import load_config


def sweep_configs(
    overrides: Sequence[str],
    *,
    multirun: bool = False,
    config_dir: str | None = None,
    config_name: str = "config",
) -> list[Config]:
    """The validated config of every job ``python -m repro.run [-m] ...`` would launch, in order
    (the config's ``hydra.sweeper.params`` first, then the command line, as Hydra's basic
    sweeper expands them)."""
    jobs = sweep_jobs(overrides, multirun=multirun, config_dir=config_dir, config_name=config_name)
    return [cfg for _, cfg in jobs]


def sweep_jobs(
    overrides: Sequence[str],
    *,
    multirun: bool = False,
    config_dir: str | None = None,
    config_name: str = "config",
) -> list[tuple[list[str], Config]]:
    """Every job of :func:`sweep_configs` with its overrides (``key=value``, as the sweeper
    expanded them)."""
    plan = sweep_plan(overrides, multirun=multirun, config_dir=config_dir, config_name=config_name)
    return plan.jobs


@dataclass
class SweepPlan:
    """What a command launches (``jobs``, each with its overrides) and, for a panel sweep
    (``hydra/sweeper=panels``, :mod:`repro.panels`), what its panels list before duplicates
    are dropped (``listed``: panel, overrides, config; the same jobs, panel None, otherwise)."""

    jobs: list[tuple[list[str], Config]]
    listed: list[tuple[str | None, list[str], Config]]
    panel_line: str | None = None  # repro.panels.describe_panels, as the sweeper prints it


def sweep_plan(
    overrides: Sequence[str],
    *,
    multirun: bool = False,
    config_dir: str | None = None,
    config_name: str = "config",
) -> SweepPlan:
    """The jobs ``python -m repro.run [-m] ...`` launches, expanded as its sweeper does: Hydra's
    basic sweeper (``hydra.sweeper.params``, then the command line), or the panel sweeper
    (every panel expanded so, each run directory once: :func:`repro.panels.distinct_jobs`)."""
    register_configs()

    primary = Path(config_dir).resolve() if config_dir else CONF_DIR
    search = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir else []
    composed: dict[tuple[str, ...], tuple[str, Config]] = {}  # overrides -> (run dir, config)

    def job(overrides: Sequence[str]) -> tuple[str, Config]:
        key = tuple(overrides)
        if key not in composed:
            cfg = composer(list(key))
            run_dir = str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
            with open_dict(cfg):
                del cfg["hydra"]
            config = load_config(cfg)
            check_method_overrides(config.method.name, list(key))
            composed[key] = (run_dir, config)
        return composed[key]

    with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
        base = compose(config_name, overrides=search, return_hydra_config=True)
        repo = GlobalHydra.instance().config_loader().repository  # with the search path above
        choices = set(base.hydra.runtime.choices)
        composer = GroupComposer(
            lambda o: compose(config_name, overrides=[*search, *o], return_hydra_config=True),
            is_group=lambda key: key in choices or repo.group_exists(key),
        )
        panels = None
        if multirun:
            sweeper = base.hydra.sweeper
            params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}
            panels = sweeper.get("panels")
        if panels:
            listing = expand_panels(OmegaConf.to_container(panels), params, overrides)
            distinct = distinct_jobs(
                listing,
                run_dir=lambda o: job(o)[0],
                fingerprint=lambda o: rundir.fingerprint(job(o)[1]),
            )
            kept = [list(d.overrides) for d in distinct]
            line = describe_panels(listing, distinct)
        else:
            if multirun:
                args = [f"{k}={v}" for k, v in params.items()] + list(overrides)
                parsed = OverridesParser.create().parse_overrides(args)
                (kept,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
            else:
                kept = [list(overrides)]
            listing, line = [(None, o) for o in kept], None
        return SweepPlan(
            jobs=[(list(o), job(o)[1]) for o in kept],
            listed=[(panel, list(o), job(o)[1]) for panel, o in listing],
            panel_line=line,
        )


def describe_deduplication(plan: SweepPlan) -> list[str]:
    """What a panel sweep saves by running each of its runs once: a view of the jobs' part of
    the total (the distinct jobs priced above), not another part of it."""
    listed = sum(estimate(cfg).gpu_hours for _, _, cfg in plan.listed)
    distinct = sum(estimate(cfg).gpu_hours for _, cfg in plan.jobs)
    saved = listed - distinct
    share = saved / listed if listed else 0.0
    return [
        plan.panel_line or "",
        f"de-duplication (not in the total): the panels list {len(plan.listed)} job(s), "
        f"{listed:.2f} GPU-h if each ran as listed; the sweep runs the {len(plan.jobs)} distinct "
        f"job(s) priced above, which saves {saved:.2f} GPU-h ({share:.0%})",
    ]
