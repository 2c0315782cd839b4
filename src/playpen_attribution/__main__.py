"""`python -m playpen_attribution` is the `playpen-attribution` command."""

import sys

from playpen_attribution.cli import main

sys.exit(main())
