"""Rotate ("whirl") captcha: the clockwise turn of the inner disc that continues the ring's picture across the seam.

The ring's inner rim (just outside the hole) and the disc's rim (just inside its edge) are sampled on circles as
1-D colour profiles over the angle. Turning the disc clockwise by θ shifts its profile by θ, so the seam's mismatch
for every θ at once is a circular cross-correlation (FFT): colour continuity plus continuity of the colour's
change along the rim, each normalised by its median over all angles. The best of 720 half-degree steps is refined
by a parabola through its neighbours. Samples sit a little off the seam on both sides, away from the hole's
transparent or white edge and its JPEG ringing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from addon.solving.vision.common import (
    F32,
    Decoded,
    VisionError,
    VisionResult,
    check_not_blank,
    clamp01,
    decode,
    logistic,
)

log = logging.getLogger(__name__)

OUTER_SIZE, INNER_SIZE, HOLE_RADIUS = 347, 211, 105.5
"""The nominal geometry: other sizes are taken as scaled versions of it."""
STEPS = 720
SEAM_OFFSET = 1.5
"""Distance of the sampling circles from the seam, in px of the nominal size (chosen on the tune split)."""
EXCLUDE_DEG = 10.0
"""The runner-up is the best angle at least this far from the winner."""
RATIO_RANGE = (OUTER_SIZE / INNER_SIZE * 0.85, OUTER_SIZE / INNER_SIZE * 1.15)

# Logistic calibration of the confidence on (margin, best cost), fitted on the tune split by
# `uv run python -m scripts.eval_local --fit`.
CONF_BIAS, CONF_MARGIN, CONF_COST = 9.525, 16.675, -21.230


@dataclass(frozen=True, slots=True)
class RotateAnalysis:
    angle: float
    cost: float
    """Seam mismatch at the answer, relative to its median over all angles: lower is better."""
    margin: float
    """Runner-up's cost minus the winner's, same unit: higher is surer."""

    @property
    def confidence(self) -> float:
        return clamp01(logistic(CONF_BIAS + CONF_MARGIN * self.margin + CONF_COST * self.cost))


def solve_rotate(inner: bytes, outer: bytes) -> VisionResult:
    a = analyse(inner, outer)
    return VisionResult(value=a.angle, confidence=a.confidence)


def analyse(inner: bytes, outer: bytes) -> RotateAnalysis:
    o = decode(outer, "outer")
    i = decode(inner, "inner")
    _check_geometry(o, i)
    ko, ki = o.width / OUTER_SIZE, i.width / INNER_SIZE
    co, ci = (o.width - 1) / 2, (i.width - 1) / 2
    hole, disc = HOLE_RADIUS * ko, i.width / 2
    _check_open_centre(o, co, hole)
    ring = _profile(o, co, hole + SEAM_OFFSET * ko, ko)
    rim = _profile(i, ci, disc - SEAM_OFFSET * ki, -ki)
    _check_profile(ring, "outer")
    _check_profile(rim, "inner")
    cost = _seam_cost(ring, rim)
    return _pick(cost)


def _check_geometry(o: Decoded, i: Decoded) -> None:
    for d, what, lo, hi in ((o, "outer", 120, 2048), (i, "inner", 70, 1400)):
        if abs(d.width - d.height) > max(2, 0.02 * d.width):
            raise VisionError(f"{what}: {d.width}x{d.height} is not square")
        if not lo <= d.width <= hi:
            raise VisionError(f"{what}: {d.width} px is outside {lo}..{hi}")
    ratio = o.width / i.width
    if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:
        raise VisionError(f"outer {o.width} px and inner {i.width} px are not the parts of one whirl")


def _check_open_centre(o: Decoded, c: float, hole: float) -> None:
    """The ring's centre must be a hole (transparent or white): otherwise this is no rotate captcha's ring."""
    r = int(hole * 0.7)
    lo, hi = round(c) - r, round(c) + r + 1
    if o.alpha is not None and float(o.alpha[lo:hi, lo:hi].mean()) < 0.5:
        return
    centre = o.rgb[lo:hi, lo:hi]
    if float((centre.min(axis=2) > 0.9).mean()) < 0.8:
        raise VisionError("outer: the centre is neither transparent nor white (not a whirl ring)")


def _sample(d: Decoded, c: float, radius: float) -> tuple[F32, F32 | None]:
    phi = np.arange(STEPS, dtype=np.float32) * np.float32(2 * math.pi / STEPS)
    mx = (c + radius * np.cos(phi)).astype(np.float32)[None, :]
    my = (c + radius * np.sin(phi)).astype(np.float32)[None, :]
    rgb = cv2.remap(d.rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
    alpha = None
    if d.alpha is not None:
        alpha = cv2.remap(d.alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
    return rgb, alpha


def _profile(d: Decoded, c: float, radius: float, step: float) -> F32:
    """Colour along a circle (STEPS x 3); where it touches transparency, the sample one px further from the seam."""
    rgb, alpha = _sample(d, c, radius)
    if alpha is not None and float(alpha.min()) < 0.9:
        further, _ = _sample(d, c, radius + step)
        rgb = np.where((alpha < 0.9)[:, None], further, rgb)
    return rgb


def _check_profile(p: F32, what: str) -> None:
    check_not_blank(p, None, f"{what} rim")


def _xcorr(a: F32, b: F32) -> np.ndarray:
    """c[k] = sum_n a[n + k] . b[n] over channels (circular), for profiles of shape STEPS x C."""
    fa = np.fft.rfft(a, axis=0)
    fb = np.fft.rfft(b, axis=0)
    out: np.ndarray = np.fft.irfft((fa * np.conj(fb)).sum(axis=1), n=STEPS)
    return out


def _ssd(a: F32, b: F32) -> np.ndarray:
    """sum over the circle of |a(φ) - b(φ - θ)|² for every θ step."""
    out: np.ndarray = float((a * a).sum()) + float((b * b).sum()) - 2.0 * _xcorr(a, b)
    return out


def _seam_cost(ring: F32, rim: F32) -> np.ndarray:
    ring = ring - ring.mean(axis=0)
    rim = rim - rim.mean(axis=0)
    colour = _ssd(ring, rim)
    change = _ssd(_along(ring), _along(rim))
    total: np.ndarray = colour / max(float(np.median(colour)), 1e-9) + change / max(float(np.median(change)), 1e-9)
    return total


def _along(p: F32) -> F32:
    """The colour's change along the circle (central difference)."""
    out: F32 = np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)
    return out


def _pick(cost: np.ndarray) -> RotateAnalysis:
    k = int(np.argmin(cost))
    y0, y1, y2 = float(cost[k - 1]), float(cost[k]), float(cost[(k + 1) % STEPS])
    den = y0 - 2 * y1 + y2
    offset = 0.5 * (y0 - y2) / den if den > 1e-12 else 0.0
    angle = ((k + max(-0.5, min(0.5, offset))) * 360.0 / STEPS) % 360.0
    if angle >= 360.0:  # a tiny negative angle modulo 360 rounds to 360.0
        angle = 0.0
    median = max(float(np.median(cost)), 1e-9)
    steps_apart = np.abs((np.arange(STEPS) - k + STEPS // 2) % STEPS - STEPS // 2)
    runner_up = float(cost[steps_apart * 360.0 / STEPS > EXCLUDE_DEG].min())
    return RotateAnalysis(angle=angle, cost=y1 / median, margin=(runner_up - y1) / median)
