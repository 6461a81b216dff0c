"""``python -m repro.cost``: :func:`repro.cost.cli.main`."""

import sys

from repro.cost.cli import main

if __name__ == "__main__":
    sys.exit(main())
