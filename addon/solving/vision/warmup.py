"""The warm-up a worker process runs before its first solve (see `addon.solving.workers`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from addon.solving.vision.rotate import solve_rotate
from addon.solving.vision.slide import solve_slide


def warm_up() -> bool:
    """Runs one solve of each kind on made-up pictures: the first calls set up codecs, FFT plans and the 3d
    network (about 60 ms for rotate and slide, 150 ms more for 3d), which belongs at start-up, not in the first
    challenge. True when at least one solve ran through."""
    cv2.setNumThreads(1)  # one core per worker process: OpenCV's own thread pool would compete with the proxy
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
        lambda: solve_rotate(encoded(".png", disc), encoded(".png", ring)),
        lambda: solve_rotate(encoded(".jpg", disc[:, :, :3]), encoded(".jpg", ring[:, :, :3])),
        lambda: solve_slide(encoded(".jpg", background), encoded(".png", piece), 100.0),
        lambda: solve_slide(encoded(".jpg", background), None, None),
        _solve_3d,
    ]
    ran = 0
    for attempt in attempts:
        # The warm-up is only a head start, never a reason to fail.
        with contextlib.suppress(Exception):
            attempt()
            ran += 1
    return ran > 0


def _solve_3d() -> None:
    """Reads the model's file (once per worker) and runs the whole solve on a made-up picture (coloured shapes on
    a pale ground): the first pass through the network sets it up, about 150 ms."""
    from addon.solving.vision.objects3d import load_model, solve_3d

    load_model()
    picture = np.full((344, 552, 3), 238, np.uint8)
    colours = np.random.default_rng(0).integers(30, 200, (7, 3))
    for i, colour in enumerate(colours.tolist()):
        cx, cy = 60 + i * 72, 100 + (i % 2) * 140
        if i % 3 == 0:
            cv2.circle(picture, (cx, cy), 28, colour, -1)
        elif i % 3 == 1:
            cv2.rectangle(picture, (cx - 26, cy - 26), (cx + 26, cy + 26), colour, -1)
        else:
            cv2.fillPoly(picture, [np.array([(cx, cy - 30), (cx - 28, cy + 26), (cx + 28, cy + 26)])], colour)
    solve_3d(cv2.imencode(".jpg", picture)[1].tobytes())
