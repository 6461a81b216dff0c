"""`python -m repro.collect`: the CLI of `repro.collect.cli`."""

import sys

from repro.collect.cli import main

if __name__ == "__main__":
    sys.exit(main())
