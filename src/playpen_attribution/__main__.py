"""`python -m playpen_attribution` is the `playpen-attribution` command."""

import sys

from playpen_attribution.cli import main

if __name__ == "__main__":  # Bergson's worker processes (attribute.nproc_per_node > 1) re-import this module
    sys.exit(main())
