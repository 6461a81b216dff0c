"""``python -m repro.lm_adapt model=<size> ...`` (and ``torchrun -m repro.lm_adapt``): compose
conf/lm_adapt.yaml, run LM adaptation, one ``error:`` line for a user's mistake.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from repro.config import CONF_DIR
from repro.lm_adapt.config import output_dir, to_lm_adapt_config
from repro.lm_adapt.train import distributed, lm_adapt


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="lm_adapt")
def main(dcfg: DictConfig) -> None:
    try:
        run = to_lm_adapt_config(dcfg)
        result = lm_adapt(run)
    except (ValueError, KeyError, OSError, OmegaConfBaseException) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if distributed()[0] == 0:
        print(f"{output_dir(run)}: LM adaptation at step {result['step']}")
