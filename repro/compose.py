"""Many jobs of one sweep composed quickly, each as Hydra would compose it.

Hydra builds a job's defaults list and merges its YAML files for every job it composes (about
0.2 s a job here: the 210 jobs of ``sweeps/fig3_all.yaml`` took most of a minute before anything
was priced, the 336 of ``sweeps/toy/fig3_all.yaml`` two to three minutes before the first job
started). Only the config-group choices (``model=``, ``task=``, ...) change that work; the plain
values (``prompt_len=``, ``seed=``, ...) are set on the result afterwards, in order. So
:class:`GroupComposer` composes each combination of group choices once and sets each job's values
on a copy, as Hydra sets them. Anything else (``+key``, ``~key``, ``key@package``, a ``hydra.``
key, a value Hydra refuses) takes Hydra's own path, so its error is Hydra's. A copy's ``hydra``
node holds ``hydra.sweep`` alone (the run directory): the rest of Hydra's node would double the
cost of each copy, and callers read nothing else from it; a job composes itself when it runs.
The panel sweeper and ``repro.cost`` share it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict


class GroupComposer:
    """``composer(overrides)``: the config ``load(overrides)`` returns (Hydra's composition,
    with its ``hydra`` node), composed once per combination of group choices.

    ``is_group(key)`` says whether a key names a config group (``model``, ``hydra/launcher``)."""

    def __init__(
        self, load: Callable[[list[str]], DictConfig], is_group: Callable[[str], bool]
    ) -> None:
        self._load = load
        self._is_group = is_group
        self._parser = OverridesParser.create()
        self._bases: dict[tuple[str, ...], DictConfig] = {}

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        groups: list[str] = []
        values: list[Override] = []
        for override in self._parser.parse_overrides(list(overrides)):
            if self._is_plain_value(override):
                values.append(override)
            else:
                groups.append(override.input_line)
        if not values:
            return self._load(list(overrides))
        key = tuple(groups)
        if key not in self._bases:
            base = self._load(groups)
            sweep = OmegaConf.to_container(base.hydra.sweep, resolve=False)
            with open_dict(base):
                del base["hydra"]
                base.hydra = {"sweep": sweep}
            self._bases[key] = base
        cfg = copy.deepcopy(self._bases[key])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:  # Hydra's own path says what is wrong, as the job would
            return self._load(list(overrides))
        return cfg

    def _is_plain_value(self, override: Override) -> bool:
        return (
            override.type == OverrideType.CHANGE
            and override.package is None
            and not override.is_hydra_override()
            and not self._is_group(override.key_or_group)
        )
