"""The solver seam: what every solver (local, omocaptcha v1, omocaptcha v2, ...) offers the scheduler.

A solver turns one captured challenge into a `Solution` or raises a `SolveFailure` (`addon/solving/failures.py`,
one class per failure reason). Everything around it (job slots, the challenge's deadline, the per-service breaker,
the chain of solvers, the single final event) is the scheduler's, once, for every solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, assert_never

from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.kinds import AnswerType, Kind
from addon.solving.failures import Unavailable

WIDGET_TRAVEL = 271.0
"""Slider travel of the 340-px web widget (340 minus a 69-px handle): one full relative turn of the whirl."""
NATURAL_SIZE = (552, 344)
"""A background's or an object image's size when the challenge lacks it."""


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


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    """In pixels of the image shown `width_view` wide."""
    y: float
    fraction_x: float
    fraction_y: float
    x_natural: float
    """In the image's own pixels."""
    y_natural: float

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "fraction_x": self.fraction_x, "fraction_y": self.fraction_y,
                "x_natural": self.x_natural, "y_natural": self.y_natural}


class BadPoints(ValueError):
    """A solver's points are not points on the image (too few, too many, outside it, not numbers)."""


@dataclass(frozen=True, slots=True)
class PointsAnswer:
    """The objects to click, in order (3d, icon)."""

    points: tuple[Point, ...]
    width_view: int
    height_view: int

    @classmethod
    def from_view(cls, points: Sequence[tuple[float, float]], natural: tuple[int, int], width_view: int,
                  height_view: int, count: int | None = 2) -> PointsAnswer:
        """Points in `width_view` x `height_view` pixels; raises BadPoints unless there are `count` (None: one or
        more) finite points inside the view."""
        if count is not None and len(points) != count:
            raise BadPoints(f"{len(points)} points where {count} were expected")
        if not points:
            raise BadPoints("no points")
        out = []
        for x, y in points:
            if not (math.isfinite(x) and math.isfinite(y)) or not (0 <= x <= width_view and 0 <= y <= height_view):
                raise BadPoints(f"point ({x:g}, {y:g}) lies outside the {width_view}x{height_view} image")
            fx, fy = x / width_view, y / height_view
            out.append(Point(x=x, y=y, fraction_x=fx, fraction_y=fy, x_natural=fx * natural[0],
                             y_natural=fy * natural[1]))
        return cls(points=tuple(out), width_view=width_view, height_view=height_view)

    def scaled(self, width: float) -> dict[str, Any]:
        """The points in pixels of the image shown `width` wide (the HTTP API's `?width=W`)."""
        height = width * self.height_view / self.width_view
        return {"points": [{"x": p.fraction_x * width, "y": p.fraction_y * height} for p in self.points],
                "width": width, "height": height}

    def to_json(self) -> dict[str, Any]:
        return {"points": [p.to_json() for p in self.points], "width_view": self.width_view,
                "height_view": self.height_view}


Answer = SlideAnswer | RotateAnswer | PointsAnswer


def answer_type(answer: Answer) -> AnswerType:
    match answer:
        case RotateAnswer():
            return "rotate"
        case SlideAnswer():
            return "slide"
        case PointsAnswer():
            return "points"
        case _:
            assert_never(answer)


def answer_from_json(answer: AnswerType, doc: dict[str, Any]) -> Answer:
    """The answer back from its `to_json()` (the fleet hands answers between proxies as JSON)."""
    match answer:
        case "rotate":
            return RotateAnswer(**doc)
        case "slide":
            return SlideAnswer(**doc)
        case "points":
            return PointsAnswer(points=tuple(Point(**p) for p in doc["points"]), width_view=doc["width_view"],
                                height_view=doc["height_view"])
        case _:
            assert_never(answer)


@dataclass(frozen=True, slots=True)
class Solution:
    result: str
    """The solver's raw answer as a string (a paid service's `result`; the local solver's own figure)."""
    answer: Answer
    confidence: float | None = None
    """0..1 for solvers that can say how sure they are (local); None for those that cannot (paid services)."""


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

    def service_fault(self, failure: Unavailable) -> None:
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
    kinds: frozenset[Kind]
    """The kinds it solves: the scheduler's chain passes it by for any other (and a kind no solver of the chain
    takes fails `no_solver` at once)."""

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        """Solves one challenge or raises a SolveFailure. Cancelled when the deadline passes; CPU work runs off the
        event loop."""
        ...

    async def check(self) -> str | None:
        """A free health/key check (getBalance for paid services): the balance as a string, None when there is
        none; raises InvalidKey, or Unavailable (reached=False) when the service cannot be asked."""
        ...

    async def close(self) -> None: ...


class PaidSolver(Solver, Protocol):
    """A paid service (`paid` is True): what the scheduler also asks of it (addon/solving/paid.py has the common
    part, with a no-op `report`)."""

    async def report(self, job_id: str, accepted: bool) -> bool:
        """Tells the service whether the site accepted a job's answer; best effort, never raises: True when the
        service took the report."""
        ...


def is_paid(solver: Solver) -> TypeGuard[PaidSolver]:
    return solver.paid


def natural_width(challenge: Captured) -> int:
    background = challenge.images.get(Role.BACKGROUND)
    return background.info.width if background is not None else NATURAL_SIZE[0]


def object_image_size(challenge: Captured) -> tuple[int, int]:
    """An object captcha's image size (natural pixels)."""
    image = challenge.images.get(Role.IMAGE)
    return (image.info.width, image.info.height) if image is not None else NATURAL_SIZE


def view_size(challenge: Captured, width_view: int) -> tuple[int, int]:
    """(width_view, height_view): the image shown `width_view` wide keeps its aspect (340 → 212 for 552x344)."""
    width, height = object_image_size(challenge)
    return width_view, max(1, round(width_view * height / width))
