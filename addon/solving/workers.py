"""Worker processes for the local solver's CPU work, so that code holding the GIL (numpy, OpenCV, PIL) never
stalls mitmproxy's event loop.

A `WorkerPool` runs pure functions named "module:function" (image bytes in, a small dataclass out) in a
`ProcessPoolExecutor` of `spawn`ed processes (mitmdump is multi-threaded: a plain fork could copy a held lock).
It is started and warmed up when mitmproxy runs, so the first challenge pays no process or library start-up; a
worker that dies fails the challenges it held (`WorkerCrashed`) and the pool is built again; `close()` stops the
processes and reaps them, so nothing outlives or hangs mitmdump's exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

MAX_WORKERS = 8
STOP_SECONDS = 3.0
"""How long `close()` lets workers finish their current task before it terminates them."""


class WorkerCrashed(Exception):
    """A worker process died while it held this call (killed, out of memory, a crash in native code)."""


class PoolClosed(Exception):
    """The pool was closed (the proxy is stopping)."""


def default_workers() -> int:
    """One worker per core this process may run on but one, which mitmproxy's event loop keeps (at least one
    worker, at most MAX_WORKERS): workers on every core would compete with the loop they are there to spare."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores - 1))


# --- inside a worker process --------------------------------------------------------------------------------------

_warm = False
"""Set in a worker once its warm-up has run (the `prepare` function returned True)."""


@dataclass(frozen=True, slots=True)
class Reply:
    value: Any
    warm: bool
    """The worker had finished its warm-up before this call."""
    pid: int


def _start_worker(prepare: str) -> None:
    global _warm
    # Ctrl-C in a terminal reaches the whole process group: the proxy decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm = bool(_resolve(prepare)())


@functools.cache
def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


def _call(target: str, args: tuple[Any, ...]) -> Reply:
    try:
        return Reply(_resolve(target)(*args), _warm, os.getpid())
    except Exception as e:
        if type(e).__module__ == "builtins" or type(e).__module__.startswith("addon."):
            raise
        # Taking a numpy or OpenCV exception apart in mitmdump would load that library there.
        raise RuntimeError(f"{type(e).__module__}.{type(e).__name__}: {e}") from None


def _started() -> int:
    return os.getpid()


# --- in mitmdump --------------------------------------------------------------------------------------------------


class WorkerPool:
    def __init__(self, name: str, prepare: str, workers: int | None = None):
        """`prepare` ("module:function") runs once in each worker before its first call (imports, first-call
        set-ups) and returns True when it did its work."""
        self.name = name
        self.workers = workers or default_workers()
        self._prepare = prepare
        self._context = multiprocessing.get_context("spawn")
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._warming: asyncio.Future[float] | None = None
        self._closed = False
        self._cold_pids: set[int] = set()
        self.generation = 0
        """How many times the pool was built (1 after start, +1 after each crash)."""

    @property
    def ready(self) -> bool:
        """Every worker of the current pool has started and warmed up."""
        w = self._warming
        return w is not None and w.done() and not w.cancelled() and w.exception() is None

    def start(self) -> None:
        """Starts the worker processes and their warm-up (in the background); call with mitmproxy's loop running."""
        if self._executor is None and not self._closed:
            self._build()

    def _build(self) -> concurrent.futures.ProcessPoolExecutor:
        self.generation += 1
        _drop_package_dirs_from_sys_path()
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=self._context, initializer=_start_worker,
            initargs=(self._prepare,))
        self._executor = executor
        loop = asyncio.get_running_loop()
        # Starting a process takes a few ms and each warm-up far more: both away from the loop. One task per worker
        # makes the executor start every worker now (it starts them as tasks arrive).
        self._warming = loop.run_in_executor(None, self._warm_up, executor, self.workers, time.monotonic())
        self._warming.add_done_callback(self._warmed)
        return executor

    @staticmethod
    def _warm_up(executor: concurrent.futures.ProcessPoolExecutor, workers: int, t0: float) -> float:
        for f in [executor.submit(_started) for _ in range(workers)]:
            f.result()
        return time.monotonic() - t0

    def _warmed(self, f: asyncio.Future[float]) -> None:
        if f.cancelled() or self._closed:
            return
        if f.exception() is not None:
            logger.warning(f"captcha: {self.name}: starting the workers failed: {f.exception()!r}")
            return
        logger.info(f"captcha: {self.name}: {self.workers} worker processes started and warmed up in "
                    f"{f.result():.1f} s")

    async def run(self, target: str, *args: Any) -> Any:
        """`target(*args)` in a worker process, `target` being "module:function" (imported there, not here).
        Raises what the function raises (exceptions of numpy, OpenCV etc. as RuntimeError), WorkerCrashed or
        PoolClosed."""
        if self._closed:
            raise PoolClosed(f"{self.name} is closed")
        executor = self._executor
        if executor is None:
            logger.info(f"captcha: {self.name}: a challenge came before the workers were started; it waits for them")
            executor = self._build()
        try:
            future = executor.submit(_call, target, args)
        except BrokenProcessPool:
            # A worker died while the pool was idle: nothing was lost, so this call goes to a new pool.
            executor = self._rebuild(executor)
            future = executor.submit(_call, target, args)
        except RuntimeError as e:  # shut down meanwhile
            raise PoolClosed(f"{self.name} is closed") from e
        try:
            reply = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            if self._closed:
                raise PoolClosed(f"{self.name} is closed") from None
            self._rebuild(executor)
            raise WorkerCrashed(f"a {self.name} worker process died during the solve") from None
        if not reply.warm and reply.pid not in self._cold_pids:
            self._cold_pids.add(reply.pid)
            logger.warning(f"captcha: {self.name}: worker {reply.pid} solved before its warm-up: the first solves "
                           "pay the libraries' start-up")
        return reply.value

    def _rebuild(self, broken: concurrent.futures.ProcessPoolExecutor) -> concurrent.futures.ProcessPoolExecutor:
        """The pool after `broken` died: built once per death, however many calls it failed."""
        if self._executor is not broken:
            assert self._executor is not None
            return self._executor
        logger.error(f"captcha: {self.name}: a worker process died (killed, out of memory or crashed); the "
                     "challenges it held fail, and the workers start again")
        if self._warming is not None:
            self._warming.cancel()
        broken.shutdown(wait=False, cancel_futures=True)
        return self._build()

    async def close(self) -> None:
        """Stops the workers: they finish the call they hold (up to STOP_SECONDS), then are terminated."""
        self._closed = True
        executor, self._executor = self._executor, None
        if self._warming is not None:
            self._warming.cancel()
        if executor is None:
            return
        # The executor's own list of its processes (private, but the only handle on them).
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(_reap, processes, STOP_SECONDS)


def _drop_package_dirs_from_sys_path() -> None:
    """A spawned worker starts from mitmdump's `sys.path`. mitmproxy's script loader restores `sys.path` by value
    while OpenCV's import swaps the list, which leaves OpenCV's own folder (site-packages/cv2) in it; in a new
    process that folder's `typing` package shadows the standard library's and the worker dies at start. An
    installed package's own folder never belongs on `sys.path`."""
    def stray(entry: str) -> bool:
        parent = os.path.basename(os.path.dirname(os.path.abspath(entry)))
        return parent in ("site-packages", "dist-packages") and os.path.isfile(os.path.join(entry, "__init__.py"))

    if any(stray(p) for p in sys.path):
        sys.path[:] = [p for p in sys.path if not stray(p)]


def _reap(processes: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            with contextlib.suppress(Exception):
                p.terminate()
                p.join(1.0)
        if p.is_alive():
            with contextlib.suppress(Exception):
                p.kill()
                p.join(1.0)
