"""The solver seam: what every solver (local, omocaptcha v1, omocaptcha v2, ...) offers the scheduler.

A solver turns one captured challenge into a `Solution` or raises `SolveFailure`. Everything around it (job
slots, the challenge's deadline, the per-service breaker, the chain of solvers, the single final event) is the
scheduler's, once, for every solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from addon.capture.assemble import Captured
from addon.capture.images import Role

WIDGET_TRAVEL = 271.0
"""Slider travel of the 340-px web widget (340 minus a 69-px handle): one full relative turn of the whirl."""

FAILURE_REASONS = ("timeout", "unsolvable", "api_error", "invalid_key", "overloaded", "shutdown", "bad_image")


@dataclass(frozen=True, slots=True)
class SlideAnswer:
    x: float
    """Where to drag the piece, in pixels of `width_view`."""
    width_view: int
    fraction: float
    """x / width_view: scale-free."""
    x_natural: float
    """x in the background image's own pixels."""

    @classmethod
    def from_natural(cls, x_natural: float, natural_width: int, width_view: int) -> SlideAnswer:
        x = x_natural * width_view / natural_width
        return cls(x=x, width_view=width_view, fraction=x / width_view, x_natural=x_natural)

    @classmethod
    def from_view(cls, x: float, natural_width: int, width_view: int) -> SlideAnswer:
        return cls(x=x, width_view=width_view, fraction=x / width_view, x_natural=x * natural_width / width_view)

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "width_view": self.width_view, "fraction": self.fraction, "x_natural": self.x_natural}


@dataclass(frozen=True, slots=True)
class RotateAnswer:
    value: float
    """fraction * 271: the drag on the 340-px web widget (omocaptcha v1's unit, as we read it)."""
    fraction: float
    """Share of the slider's travel, 0 ≤ fraction < 1: angle / 360."""
    angle: float
    """Clockwise turn of the inner disc relative to the ring that lines them up, 0 ≤ angle < 360."""

    @classmethod
    def from_angle(cls, angle: float) -> RotateAnswer:
        angle = angle % 360.0
        fraction = angle / 360.0
        return cls(value=fraction * WIDGET_TRAVEL, fraction=fraction, angle=angle)

    @classmethod
    def from_fraction(cls, fraction: float) -> RotateAnswer:
        return cls.from_angle(fraction * 360.0)

    @classmethod
    def from_value(cls, value: float) -> RotateAnswer:
        """omocaptcha v1's result: slider px on the 340-px widget. `value` is kept as the service said it."""
        fraction = value / WIDGET_TRAVEL
        return cls(value=value, fraction=fraction, angle=(fraction * 360.0) % 360.0)

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "fraction": self.fraction, "angle": self.angle}


Answer = SlideAnswer | RotateAnswer


@dataclass(frozen=True, slots=True)
class Solution:
    result: str
    """The solver's raw answer as a string (a paid service's `result`; the local solver's own figure)."""
    answer: Answer
    confidence: float | None = None
    """0..1 for solvers that can say how sure they are (local); None for those that cannot (paid services)."""


class SolveFailure(Exception):
    """A solver could not give an answer.

    `reason` is one of FAILURE_REASONS. `available` is False when the service itself is down or unreachable (the
    scheduler's breaker counts it and the chain moves on). `reached`: the request may have reached the service
    (so a paid job may have been charged).
    """

    def __init__(self, reason: str, message: str, *, reached: bool = True, transient: bool = False):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.reached = reached
        self.transient = transient


class Job(Protocol):
    """What the scheduler lends a solver for one challenge."""

    @property
    def width_view(self) -> int: ...

    @property
    def poll_s(self) -> float:
        """Pause before the first and between result polls."""
        ...

    def started(self, job_id: str | int | None) -> None:
        """The service accepted the job (or the local solver began): the scheduler emits `solving`."""
        ...

    def service_ok(self) -> None:
        """A request to the service got a usable answer (the breaker's health signal)."""
        ...

    def service_fault(self, failure: SolveFailure) -> None:
        """A request to the service failed for availability reasons (refused, timed out, 5xx, 429, garbage)."""
        ...

    def job_sent(self) -> None:
        """A paid job was (or may have been) created: counted in `jobs_sent`."""
        ...

    def job_not_sent(self) -> None:
        """A create that provably never reached the service: undo the count."""
        ...


class Solver(Protocol):
    name: str
    """The `service` named in events: `local`, `omocaptcha-v1`, `omocaptcha-v2`."""
    paid: bool

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        """Solves one challenge or raises SolveFailure. Cancelled when the deadline passes; CPU work runs off the
        event loop."""
        ...

    async def check(self) -> str | None:
        """A free health/key check (getBalance for paid services): the balance as a string, None when there is
        none; raises SolveFailure (`invalid_key`, or `api_error` with transient=True when unreachable)."""
        ...

    async def close(self) -> None: ...


def natural_width(challenge: Captured) -> int:
    background = challenge.images.get(Role.BACKGROUND)
    return background.info.width if background is not None else 552
