"""``hydra/sweeper=panels``: one sweep of several figure panels, every distinct run once.

    python -m repro.run -m --config-dir sweeps --config-name fig3_all

The sweep file lists each panel's axes under ``hydra.sweeper.panels`` and the axes they share
under ``hydra.sweeper.params``. The sweeper expands each panel as Hydra's basic sweeper expands
one sweep (:func:`repro.panels.expand_panels`), composes every job's config to find its run
directory, keeps each directory once (:func:`repro.panels.distinct_jobs`; two panels naming one
directory with different configs refuse the sweep before it starts), prints the count, and hands
the distinct jobs to whatever launcher is chosen (basic, local, packed, submitit) in batches of
``max_batch_size``. ``repro.cost -m`` prices the same file the same way. Details: docs/sweeps.md.
Hydra imports every plugin module when it starts (in any Hydra app of this environment), so this
one imports ``repro`` only inside the sweeper's methods.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class PanelsSweeperConf:
    _target_: str = "hydra_plugins.repro_panels_sweeper.panels_sweeper.PanelsSweeper"
    max_batch_size: int | None = None
    # the axes every panel shares (key -> comma-separated values), as in the basic sweeper
    params: dict[str, str] | None = None
    # panel name -> its own axes; each panel is the product of params, its axes, the command line
    panels: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="panels", node=PanelsSweeperConf, provider="repro"
)


class PanelsSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        panels: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.panels = panels or {}
        self._composed: dict[tuple[str, ...], Any] = {}  # a job's config, composed once
        self._group_composer: Any = None  # _composer

    def _sweep_config(self, overrides):
        key = tuple(overrides)
        if key not in self._composed:
            self._composed[key] = self._composer()(list(key))
        return self._composed[key]

    def _composer(self) -> Any:
        """Each job's config as Hydra's ``load_sweep_config`` composes it, the config groups
        once per combination (:class:`repro.compose.GroupComposer`). Only the run directory
        and the fingerprint are read from it; the launcher composes each job itself."""
        if self._group_composer is None:
            from repro.compose import GroupComposer

            loader = self.hydra_context.config_loader
            repo = getattr(loader, "repository", None)
            self._group_composer = GroupComposer(
                lambda overrides: loader.load_sweep_config(self.config, overrides),
                is_group=lambda key: repo is None or repo.group_exists(key),
            )
        return self._group_composer

    def _run_dir(self, overrides) -> str:
        sweep = self._sweep_config(overrides).hydra.sweep
        return str((Path(str(sweep.dir)) / str(sweep.subdir)).absolute())

    def _fingerprint(self, overrides) -> Any:
        from repro.cli import USER_ERRORS, cli_error_message
        from repro.resolve import load_config
        from repro.rundir import fingerprint

        cfg = self._sweep_config(overrides).copy()  # the cached one keeps its hydra node
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            return fingerprint(load_config(cfg))
        except USER_ERRORS as err:  # the job itself will say so when it runs
            return ("invalid", cli_error_message(err))

    def sweep(self, arguments: list[str]) -> Any:
        from repro.panels import describe_panels, distinct_jobs, expand_panels
        from repro.sweep import SweepSummary

        listed = expand_panels(
            OmegaConf.to_container(OmegaConf.create(self.panels)) if self.panels else {},
            self.params,
            arguments,
        )
        jobs = distinct_jobs(listed, self._run_dir, self._fingerprint)
        self._composed.clear()  # the launcher composes each job for itself
        self._group_composer = None
        print(describe_panels(listed, jobs), flush=True)
        for callback in self.hydra_context.callbacks.callbacks:  # a stopped sweep counts the rest
            if isinstance(callback, SweepSummary):
                callback.planned = len(jobs)
        self.overrides = list(
            self.split_overrides_to_chunks([list(j.overrides) for j in jobs], self.max_batch_size)
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # raises a job's exception, as the basic sweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        sys.stdout.flush()
        return returns
