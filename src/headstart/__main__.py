"""``python -m headstart ...``: the command line (what ``torchrun -m headstart`` starts, too)."""

import sys

from .cli import main

sys.exit(main())
