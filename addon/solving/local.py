"""The embedded solver: the vision in `addon.solving.vision`, run in worker processes off mitmproxy's event loop.

Each kind maps to a pure function of image bytes (`_vision_call`); the pool (`addon.solving.workers`) runs it in
another process, so numpy/OpenCV holding the GIL never stalls the proxy, and mitmdump itself never loads them.
A new kind is one more entry in `_vision_call`.
"""

from __future__ import annotations

from typing import Any, assert_never

from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.kinds import Kind
from addon.solving import failures, vision
from addon.solving.base import (
    BadPoints,
    Job,
    PointsAnswer,
    RotateAnswer,
    SlideAnswer,
    Solution,
    natural_width,
    object_image_size,
    view_size,
)
from addon.solving.workers import PoolClosed, WorkerCrashed, WorkerPool

SERVICE = "local"


class LocalSolver:
    name = SERVICE
    paid = False
    kinds = frozenset({Kind.ROTATE, Kind.SLIDE, Kind.THREE_D})
    """icon goes to the next solver of the chain (or fails `no_solver`): it needs to read the prompt."""

    def __init__(self, workers: int | None = None):
        self.pool = WorkerPool("local solver", "addon.solving.vision.warmup:warm_up", workers)

    def start(self) -> None:
        """Starts and warms up the workers (mitmproxy is running): the first challenge pays no start-up."""
        self.pool.start()

    async def check(self) -> str | None:
        return None

    async def close(self) -> None:
        await self.pool.close()

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        job.started(None)
        target, args = _vision_call(challenge)
        try:
            found = await self.pool.run(target, *args)  # a VisionResult, or an ObjectsResult for 3d
        except vision.VisionError as e:
            raise _vision_failure(challenge, e) from None
        except WorkerCrashed as e:
            raise failures.ServiceError(f"local solver: {e}") from None
        except PoolClosed as e:
            raise failures.Shutdown(f"local solver: {e}") from None
        return _solution(challenge, found, job.width_view)


def _vision_failure(c: Captured, e: vision.VisionError) -> failures.SolveFailure:
    if c.kind is Kind.THREE_D:
        # The picture passed the checks every object image gets before solving: the model not finding the objects
        # is its own limit, so the next solver of the chain may still do better.
        return failures.Unsolvable(f"local solver: {e}")
    return failures.BadImage(f"local solver: {e}")


def _vision_call(c: Captured) -> tuple[str, tuple[Any, ...]]:
    """The vision function for the challenge's kind ("module:function") and its arguments (image bytes and plain
    numbers)."""
    match c.kind:
        case Kind.ROTATE:
            inner, outer = c.images.get(Role.INNER), c.images.get(Role.OUTER)
            if inner is None or outer is None:
                raise failures.BadImage("rotate challenge without both inner and outer images")
            return "addon.solving.vision.rotate:solve_rotate", (inner.body, outer.body)
        case Kind.SLIDE:
            background, piece = c.images.get(Role.BACKGROUND), c.images.get(Role.PIECE)
            if background is None:
                raise failures.BadImage("slide challenge without its background image")
            return "addon.solving.vision.slide:solve_slide", (background.body, piece.body if piece else None, c.tip_y)
        case Kind.THREE_D:
            image = c.images.get(Role.IMAGE)
            if image is None:
                raise failures.BadImage("3d challenge without its image")
            return "addon.solving.vision.objects3d:solve_3d", (image.body,)
        case Kind.ICON:
            # Not in `kinds`: the scheduler never hands these here.
            raise failures.NoSolver(f"the local solver does not solve {c.kind} challenges")
        case _:
            assert_never(c.kind)


def _solution(c: Captured, found: Any, width_view: int) -> Solution:
    """The answer from the vision function's result: a `VisionResult` (rotate: the angle; slide: the gap's x in
    natural pixels) or, for 3d, an `ObjectsResult` (the two centres in natural pixels)."""
    match c.kind:
        case Kind.ROTATE:
            rotate = RotateAnswer.from_angle(found.value)
            return Solution(f"{rotate.angle:.1f}", rotate, found.confidence)
        case Kind.SLIDE:
            slide = SlideAnswer.from_natural(found.value, natural_width(c), width_view)
            return Solution(f"{slide.x_natural:.1f}", slide, found.confidence)
        case Kind.THREE_D:
            natural = object_image_size(c)
            view_w, view_h = view_size(c, width_view)
            sx, sy = view_w / natural[0], view_h / natural[1]  # height_view is rounded: scale each axis
            try:
                points = PointsAnswer.from_view([(x * sx, y * sy) for x, y in found.points], natural, view_w, view_h)
            except BadPoints as e:
                raise failures.Unsolvable(f"local solver: {e}") from None
            # Like omocaptcha v1's "x1|y1|x2|y2", but in the image's own pixels.
            result = "|".join(f"{v:.1f}" for point in found.points for v in point)
            return Solution(result, points, found.confidence)
        case Kind.ICON:
            raise failures.NoSolver("the local solver does not solve icon challenges")
        case _:
            assert_never(c.kind)

