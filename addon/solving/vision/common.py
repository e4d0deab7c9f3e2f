"""Shared pieces of the local vision solvers: decoding bytes into arrays safely, and small helpers (the result
type and the error live in `result`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from addon.capture.images import BadImage, check_complete, probe
from addon.solving.vision.result import VisionError as VisionError
from addon.solving.vision.result import VisionResult as VisionResult

F32 = npt.NDArray[Any]
"""An image or score map, float32 by convention (typed loosely: OpenCV's stubs return untyped arrays)."""

MAX_SIDE = 4096
MAX_PIXELS = 16_000_000
"""Ceilings checked on the header before any pixel is decoded (`probe` itself is stricter still)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    rgb: F32
    """H x W x 3, float32 in 0..1, RGB order."""
    alpha: F32 | None
    """H x W float32 in 0..1, or None when the image has no alpha channel."""
    format: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def decode(data: bytes, what: str, *, min_side: int = 16) -> Decoded:
    """Decodes image bytes after checking the header's size; raises VisionError for anything unusable."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise VisionError(f"{what}: no image bytes")
    data = bytes(data)
    try:
        info = probe(data)
        check_complete(data, info)
    except BadImage as e:
        raise VisionError(f"{what}: {e}") from None
    if info.width > MAX_SIDE or info.height > MAX_SIDE or info.width * info.height > MAX_PIXELS:
        raise VisionError(f"{what}: {info.width}x{info.height} is too large to be a captcha part")
    if min(info.width, info.height) < min_side:
        raise VisionError(f"{what}: {info.width}x{info.height} is too small to be a captcha part")
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise VisionError(f"{what}: the {info.format} data does not decode")
    if raw.shape[0] != info.height or raw.shape[1] != info.width:
        raise VisionError(f"{what}: decodes to {raw.shape[1]}x{raw.shape[0]}, header said {info.width}x{info.height}")
    if raw.dtype not in (np.uint8, np.uint16):
        raise VisionError(f"{what}: unsupported sample type {raw.dtype}")
    scale = np.float32(1.0 / 65535.0 if raw.dtype == np.uint16 else 1.0 / 255.0)
    alpha: F32 | None = None
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
    elif raw.shape[2] == 4:
        alpha = raw[:, :, 3].astype(np.float32)
        alpha *= scale
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
    elif raw.shape[2] == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    elif raw.shape[2] == 2:
        alpha = raw[:, :, 1].astype(np.float32)
        alpha *= scale
        raw = cv2.cvtColor(np.ascontiguousarray(raw[:, :, 0]), cv2.COLOR_GRAY2RGB)
    else:
        raise VisionError(f"{what}: {raw.shape[2]} channels")
    rgb = raw.astype(np.float32)
    rgb *= scale
    return Decoded(rgb, alpha, info.format)


def luma(rgb: F32) -> F32:
    out: F32 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return out


def check_not_blank(rgb: F32, mask: npt.NDArray[np.bool_] | None, what: str, *, min_std: float = 0.01) -> None:
    """A single-colour (or nearly so) image carries nothing to match. Looks at every 3rd row and column."""
    sub = rgb[::3, ::3]
    pixels = sub[mask[::3, ::3]] if mask is not None else sub.reshape(-1, 3)
    if pixels.shape[0] < 16:
        raise VisionError(f"{what}: almost nothing of the image is visible")
    if float(pixels.std(axis=0).max()) < min_std:
        raise VisionError(f"{what}: the image is blank (a single colour)")


def logistic(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def clamp01(v: float) -> float:
    if not math.isfinite(v):
        return 0.0
    return min(1.0, max(0.0, v))
