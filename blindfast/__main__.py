"""``python -m blindfast`` / ``blindfast``: dispatches to :mod:`blindfast.cli` (one module per command)."""

import sys

from blindfast.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
