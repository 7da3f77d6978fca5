"""Package exports imported on first use.

Every ``ram-avatar`` call imports each feature package's ``cli`` module to register its
subcommands, which runs that package's ``__init__``; exports resolved lazily keep that free of
torch, OpenCV and MediaPipe, so ``ram-avatar --help`` answers at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` resolving ``name`` from ``exports[name]`` (a module)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
