"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import platform
import resource
import sys

import torch


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, Python {sys.version.split()[0]}, torch {torch.__version__}"
