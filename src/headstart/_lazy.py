"""Public names imported on first use (PEP 562), so that importing a package costs only what is used:
``import headstart`` and the command line's checks do not pay for importing torch."""

from __future__ import annotations

import importlib
from typing import Callable


def attach(package: str, modules: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public name N lives in its submodule
    ``modules[N]``; each name found is kept in ``namespace`` (the package's globals), so later
    lookups skip ``__getattr__``."""

    def __getattr__(name: str):
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{modules[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__
