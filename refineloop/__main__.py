"""`python -m refineloop` runs the CLI."""

import sys

from refineloop.cli.main import main

sys.exit(main())
