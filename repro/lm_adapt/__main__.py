"""``python -m repro.lm_adapt`` / ``torchrun -m repro.lm_adapt``: the Hydra entry of
``repro.lm_adapt.cli``."""

from repro.lm_adapt.cli import main

if __name__ == "__main__":
    main()
