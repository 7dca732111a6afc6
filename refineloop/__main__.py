"""`python -m refineloop` runs the CLI."""

import sys

from refineloop.cli import main

sys.exit(main())
