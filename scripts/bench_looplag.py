"""Benchmark helper loaded into mitmdump with ``-s``: measures how long mitmproxy's event loop stalls.

A task sleeps ``looplag_interval_ms`` (5 ms) in a loop and records by how much each sleep overshoots. Every
quarter of a second (and at shutdown) it appends one JSON line to the file named by ``looplag_file``::

    {"t": <unix time at the end of the window>, "max_ms": <largest overshoot in the window>,
     "max_cpu_ms": <CPU time the event loop's thread used during that longest sleep>,
     "mean_ms": <mean overshoot>, "n": <sleeps in the window>, "max_total_ms": <largest since start>,
     "max_busy_ms": <most CPU time the loop's thread used during any one sleep of the window>}

so a reader can take the worst stall within any stretch of wall time (the benchmark uses the stretch of its
200-client run). ``max_cpu_ms`` tells the two kinds of stall apart: close to ``max_ms`` means code on the loop
kept it busy; far below means the thread was not running (other processes had the CPU, or another thread of
mitmdump held the GIL). ``max_busy_ms`` is the work done on the loop between two wake-ups, whatever else the
machine runs: code that runs on the loop where it should not (a solve) shows there even on a busy machine,
where the stalls themselves also grow with other processes' load. At shutdown the largest overshoot since start
is also logged (``looplag: max ... ms``).

With ``looplag_callbacks=true`` each line also has ``max_callback_ms``: the most CPU time the loop's thread spent
in one callback (one step of a task, one I/O handler) during the window, less the garbage collector's time in it.
Unlike the figures above it does not grow
when a loaded loop runs many small callbacks back to back, so it singles out one long piece of work on the loop
(a solve there is one callback of 25 ms or more). It wraps asyncio's ``Handle._run``, a small cost on every
callback, so the benchmark leaves it off.

Loaded as a standalone script: it imports nothing from the project.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from typing import Any

from mitmproxy import ctx

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 0.25


class LoopLag:
    def __init__(self) -> None:
        self.max_total = 0.0
        self.window_max = 0.0
        self.window_max_cpu = 0.0
        self.window_max_busy = 0.0
        self.window_sum = 0.0
        self.window_n = 0
        self.window_max_callback = 0.0
        self._task: asyncio.Task[None] | None = None
        self._timing_callbacks = False

    def load(self, loader: Any) -> None:
        loader.add_option("looplag_file", str, "", "Benchmark: JSON Lines file the event-loop lag goes to.")
        loader.add_option("looplag_interval_ms", int, 5, "Benchmark: sleep of the lag probe, in ms.")
        loader.add_option("looplag_callbacks", bool, False,
                          "Benchmark: also measure the CPU time of each callback of the loop (max_callback_ms).")

    def running(self) -> None:
        if ctx.options.looplag_callbacks and not self._timing_callbacks:
            self._timing_callbacks = True
            self._time_callbacks()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(1, ctx.options.looplag_interval_ms) / 1000
        window_end = time.time() + WINDOW_SECONDS
        while True:
            start, cpu_start = loop.time(), time.thread_time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - start - interval)
            busy = time.thread_time() - cpu_start
            self.window_max_busy = max(self.window_max_busy, busy)
            self.window_n += 1
            self.window_sum += lag
            if lag > self.window_max:
                self.window_max = lag
                self.window_max_cpu = busy
            self.max_total = max(self.max_total, lag)
            if time.time() >= window_end:
                self._flush()
                window_end = time.time() + WINDOW_SECONDS

    def _time_callbacks(self) -> None:
        run = asyncio.events.Handle._run
        probe = self
        collecting = [0.0, 0.0]  # [start of the collection under way, CPU time of all collections so far]

        def on_gc(phase: str, _info: dict[str, int]) -> None:
            # A full collection of mitmdump's heap takes tens of ms in whichever callback it falls: not the code's.
            if phase == "start":
                collecting[0] = time.thread_time()
            else:
                collecting[1] += time.thread_time() - collecting[0]

        def timed(handle: asyncio.events.Handle) -> None:
            start, gc_before = time.thread_time(), collecting[1]
            try:
                run(handle)
            finally:
                took = time.thread_time() - start - (collecting[1] - gc_before)
                probe.window_max_callback = max(probe.window_max_callback, took)

        gc.callbacks.append(on_gc)
        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]

    def _flush(self) -> None:
        path = ctx.options.looplag_file
        if path and self.window_n:
            line = json.dumps({
                "t": time.time(), "max_ms": self.window_max * 1000,
                "max_cpu_ms": self.window_max_cpu * 1000,
                "mean_ms": self.window_sum / self.window_n * 1000, "n": self.window_n,
                "max_total_ms": self.max_total * 1000, "max_busy_ms": self.window_max_busy * 1000,
                **({"max_callback_ms": self.window_max_callback * 1000} if self._timing_callbacks else {}),
            })
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
        self.window_max = self.window_max_cpu = self.window_max_busy = self.window_sum = 0.0
        self.window_max_callback = 0.0
        self.window_n = 0

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._flush()
        logger.info(f"looplag: max {self.max_total * 1000:.1f} ms")


addons = [LoopLag()]
