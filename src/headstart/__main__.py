"""``python -m headstart ...``: the command line (what ``torchrun -m headstart`` starts, too)."""

from .cli import run

run()
