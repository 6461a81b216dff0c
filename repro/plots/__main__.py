"""`python -m repro.plots`: the CLI of `repro.plots.cli`."""

import sys

from repro.plots.cli import main

if __name__ == "__main__":
    sys.exit(main())
