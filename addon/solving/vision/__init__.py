"""Local vision solvers for the rotate ("whirl") and slide captchas: pure functions of the image bytes.

CPU-bound (a few ms to a few tens of ms each): call them off the event loop (`addon.solving.local` runs them in
worker processes). The solvers load numpy and OpenCV when first named here, not when the package is imported, so
the proxy process can read their results (`VisionResult`, `VisionError`) without either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from addon.solving.vision.result import VisionError, VisionResult

if TYPE_CHECKING:
    from addon.solving.vision.rotate import solve_rotate
    from addon.solving.vision.slide import solve_slide

_SOLVERS = {"solve_rotate": "addon.solving.vision.rotate", "solve_slide": "addon.solving.vision.slide"}

__all__ = ["VisionError", "VisionResult", "solve_rotate", "solve_slide"]


def __getattr__(name: str) -> Any:
    module = _SOLVERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
