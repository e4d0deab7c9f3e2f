"""The embedded solver: the vision in `addon.solving.vision`, run on a worker thread off mitmproxy's event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any, assert_never

from addon.capture.assemble import Captured
from addon.capture.images import Role
from addon.kinds import Kind
from addon.solving.base import Job, RotateAnswer, SlideAnswer, Solution, SolveFailure, natural_width

SERVICE = "local"


class LocalSolver:
    name = SERVICE
    paid = False
    kinds = frozenset({Kind.ROTATE, Kind.SLIDE})
    """3d and icon go to the next solver of the chain (or fail `no_solver`)."""

    def __init__(self, workers: int = 1):
        # OpenCV and numpy release the GIL for their heavy work, so one worker thread keeps the event loop free
        # (scripts/bench.py measures the loop's stalls); more would only compete with mitmproxy for the cores.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="captcha-local",
                                                           initializer=_prepare)
        # numpy and OpenCV load (and OpenCV sets itself up) now, while mitmproxy starts, not on the first captcha.
        self._pool.submit(_prepare)

    async def check(self) -> str | None:
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def solve(self, challenge: Captured, job: Job) -> Solution:
        job.started(None)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, solve_now, challenge, job.width_view)


def _prepare() -> None:
    """Loads numpy and OpenCV and runs one solve of each kind on made-up pictures: their first calls set up
    codecs and FFT plans while holding the GIL (about 60 ms of stalled event loop), which belongs at start-up."""
    import cv2
    import numpy as np

    from addon.solving import vision

    cv2.setNumThreads(1)  # one core for the solver: its own thread pool would compete with the proxy
    picture = np.random.default_rng(0).integers(0, 255, (347, 347, 3), dtype=np.uint8)
    picture = cv2.GaussianBlur(picture, (0, 0), 3)
    ring = cv2.cvtColor(picture, cv2.COLOR_BGR2BGRA)
    cv2.circle(ring, (173, 173), 105, (0, 0, 0, 0), -1)
    disc = cv2.cvtColor(picture[68:279, 68:279], cv2.COLOR_BGR2BGRA)
    background = cv2.resize(picture, (552, 344))
    piece = cv2.cvtColor(background[100:210, 200:310], cv2.COLOR_BGR2BGRA)

    def encoded(ext: str, image: np.ndarray[Any, Any]) -> bytes:
        return cv2.imencode(ext, image)[1].tobytes()

    attempts: list[Callable[[], object]] = [
        lambda: vision.solve_rotate(encoded(".png", disc), encoded(".png", ring)),
        lambda: vision.solve_rotate(encoded(".jpg", disc[:, :, :3]), encoded(".jpg", ring[:, :, :3])),
        lambda: vision.solve_slide(encoded(".jpg", background), encoded(".png", piece), 100.0),
        lambda: vision.solve_slide(encoded(".jpg", background), None, None),
    ]
    for attempt in attempts:
        # Anything may go wrong here (even a log line, when mitmdump exits at once, as with --options): the warm-up
        # is only a head start, never a reason to fail.
        with contextlib.suppress(Exception):
            attempt()


def solve_now(c: Captured, width_view: int) -> Solution:
    """Runs on the worker thread."""
    from addon.solving import vision  # numpy/OpenCV load on first use, not when mitmproxy loads the script

    try:
        match c.kind:
            case Kind.ROTATE:
                inner, outer = c.images.get(Role.INNER), c.images.get(Role.OUTER)
                if inner is None or outer is None:
                    raise SolveFailure("bad_image", "rotate challenge without both inner and outer images")
                found = vision.solve_rotate(inner.body, outer.body)
                rotate = RotateAnswer.from_angle(found.value)
                return Solution(f"{rotate.angle:.1f}", rotate, found.confidence)
            case Kind.SLIDE:
                background, piece = c.images.get(Role.BACKGROUND), c.images.get(Role.PIECE)
                if background is None:
                    raise SolveFailure("bad_image", "slide challenge without its background image")
                found = vision.solve_slide(background.body, piece.body if piece else None, c.tip_y)
                slide = SlideAnswer.from_natural(found.value, natural_width(c), width_view)
                return Solution(f"{slide.x_natural:.1f}", slide, found.confidence)
            case Kind.THREE_D | Kind.ICON:
                # Not in `kinds`: the scheduler never hands these here. A 3d model joins by adding THREE_D to
                # `kinds` and a case that returns a PointsAnswer.
                raise SolveFailure("no_solver", f"the local solver does not solve {c.kind} challenges",
                                   reached=False)
            case _:
                assert_never(c.kind)
    except vision.VisionError as e:
        raise SolveFailure("bad_image", f"local solver: {e}") from None
