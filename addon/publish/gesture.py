"""Human-like gesture plans for an answer: the drag a person makes on a slider, the clicks on a picture.

Sites judge the trajectory, not only where the handle ends: a straight line at constant speed, a drag shorter
than a few hundred milliseconds or one without any vertical wobble is a bot. `drag_path` plans what a hand does:
it speeds up, eases out past the target (a small overshoot), pauses, corrects back, and wobbles a little up and
down all the way; 400 to 1,500 ms in all. The plan is random but seeded (by the challenge id, in the HTTP API), so
the same challenge always gets the same plan and another challenge a different one.

A path is a list of `[t_ms, dx, dy]` steps: milliseconds since the press, and the pointer's offset from the press
point in the caller's pixels. The first step is `[0, 0, 0]` (press there), the last one ends exactly at the drag's
distance (release there). `click_plan` does the same for the points of an object captcha: `[t_ms, x, y]`, one
click per point, with pauses a person takes between them.
"""

from __future__ import annotations

import hashlib
import math
import random

Step = list[float]
"""`[t_ms, dx, dy]` of a drag, `[t_ms, x, y]` of a click."""

MIN_MS = 400
MAX_MS = 1500
SAMPLE_MS = (12, 20)
"""Pointer events come every 12 to 20 ms, as a mouse's do at 50 to 80 Hz."""


def rng_for(seed: str) -> random.Random:
    """A generator seeded by a string (the challenge id): stable across runs and Python processes."""
    return random.Random(int.from_bytes(hashlib.sha256(seed.encode("utf-8", "replace")).digest()[:8], "big"))


def _ease(u: float) -> float:
    """Minimum-jerk position (smooth start, smooth stop) on a skewed clock, so the peak speed comes early and the
    end is a long ease out, as in a person's reach."""
    s = u**0.75
    return float(10 * s**3 - 15 * s**4 + 6 * s**5)


def _smooth(u: float) -> float:
    return u * u * (3 - 2 * u)


def drag_path(distance: float, seed: str) -> list[Step]:
    """The plan of a drag over `distance` pixels (negative: to the left), seeded by `seed`."""
    rng = rng_for(seed)
    sign = -1.0 if distance < 0 else 1.0
    span = abs(distance)
    overshoot = min(max(span * rng.uniform(0.025, 0.05), 2.0), 9.0)
    main_ms = rng.uniform(420, 950)
    pause_ms = rng.uniform(40, 110)
    correct_ms = rng.uniform(110, 200)
    total = main_ms + pause_ms + correct_ms + rng.uniform(40, 150)  # then a still hold before the release
    # Vertical wobble: a slow drift of 1.5-3.5 px one way plus a faster tremor, and a bit of noise per sample.
    drift = rng.uniform(1.5, 3.5) * rng.choice((-1.0, 1.0))
    tremor, tremor_hz, phase = rng.uniform(0.6, 1.2), rng.uniform(2.5, 5.0), rng.uniform(0, 2 * math.pi)

    def dy(t: float) -> float:
        wobble = drift * math.sin(math.pi * min(t / main_ms, 1.0)) + tremor * math.sin(
            2 * math.pi * tremor_hz * t / 1000 + phase)
        return wobble + rng.uniform(-0.3, 0.3)

    def dx(t: float) -> float:
        peak = span + overshoot
        if t <= main_ms:
            return peak * _ease(t / main_ms)
        if t <= main_ms + pause_ms:
            return peak
        if t <= main_ms + pause_ms + correct_ms:
            return peak - overshoot * _smooth((t - main_ms - pause_ms) / correct_ms)
        return span

    steps: list[Step] = [[0, 0.0, 0.0]]
    t = float(rng.randint(*SAMPLE_MS))
    while t < total - 6:  # the release comes a few ms after the last move
        steps.append([round(t), round(sign * dx(t), 2), round(dy(t), 2)])
        t += rng.randint(*SAMPLE_MS)
    steps.append([round(total), round(sign * span, 2), round(dy(total), 2)])
    return steps


def click_plan(points: list[tuple[float, float]], seed: str) -> list[Step]:
    """One click per point, in order, `[t_ms, x, y]`: a first look at the picture, then a pause between clicks,
    each click a pixel or so off the point (well inside any object)."""
    rng = rng_for(seed)
    t = rng.uniform(350, 700)
    out: list[Step] = []
    for x, y in points:
        out.append([round(t), round(x + rng.uniform(-1.5, 1.5), 2), round(y + rng.uniform(-1.5, 1.5), 2)])
        t += rng.uniform(450, 1100)
    return out


def duration_ms(path: list[Step]) -> float:
    return path[-1][0] - path[0][0] if path else 0.0


__all__ = ["MAX_MS", "MIN_MS", "Step", "click_plan", "drag_path", "duration_ms", "rng_for"]
