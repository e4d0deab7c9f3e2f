"""What the vision functions return and raise: plain types without numpy or OpenCV, so that mitmdump can take a
result from a worker process without loading either."""

from __future__ import annotations

from dataclasses import dataclass


class VisionError(ValueError):
    """The input cannot be a part of this captcha: undecodable, truncated, absurd or mismatched sizes, blank."""


@dataclass(frozen=True, slots=True)
class VisionResult:
    value: float
    """rotate: clockwise angle in degrees, 0 <= value < 360; slide: x of the gap's left edge in natural pixels."""
    confidence: float
    """0..1, calibrated: the share of answers with about this confidence that were right on the evaluation set."""
