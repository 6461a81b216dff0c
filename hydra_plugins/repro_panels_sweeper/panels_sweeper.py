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

import copy
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
        self._bases: dict[tuple[str, ...], Any] = {}  # per config-group choices (_compose)

    def _sweep_config(self, overrides):
        key = tuple(overrides)
        if key not in self._composed:
            self._composed[key] = self._compose(list(key))
        return self._composed[key]

    def _compose(self, overrides: list[str]) -> Any:
        """A job's config as Hydra's ``load_sweep_config`` composes it, faster: Hydra builds the
        defaults list and merges the YAML files (~0.3 s a job; 336 listed jobs of
        sweeps/toy/fig3_all.yaml took most of the 2-3 minutes before the first job started) from
        the config-group choices alone, then sets the plain ``key=value`` overrides on the result.
        So the groups (``model=``, ``task=``, ...) are composed once per combination and each
        job's values (``prompt_len=``, ``seed=``, ...) set on a copy, in order, as Hydra sets them.
        Anything else (``+key``, ``~key``, a ``hydra.`` key, a value Hydra would refuse) takes
        Hydra's own path. Only the run directory and the fingerprint are read from it (its
        ``hydra`` node holds ``hydra.sweep`` alone); the launcher composes each job itself."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import OverrideType

        loader = self.hydra_context.config_loader
        repo = getattr(loader, "repository", None)
        parsed = OverridesParser.create().parse_overrides(overrides)
        values = [
            o
            for o in parsed
            if repo is not None
            and o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_hydra_override()
            and not repo.group_exists(o.key_or_group)
        ]
        groups = tuple(o.input_line for o in parsed if o not in values)
        if not values:
            return loader.load_sweep_config(self.config, overrides)
        if groups not in self._bases:
            base = loader.load_sweep_config(self.config, list(groups))
            # only hydra.sweep is read: the rest of Hydra's node would double each copy's cost
            sweep = OmegaConf.to_container(base.hydra.sweep, resolve=False)
            with open_dict(base):
                del base["hydra"]
                base.hydra = {"sweep": sweep}
            self._bases[groups] = base
        cfg = copy.deepcopy(self._bases[groups])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:  # Hydra's own path says what is wrong, as the job would
            return loader.load_sweep_config(self.config, overrides)
        return cfg

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
        self._bases.clear()
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
