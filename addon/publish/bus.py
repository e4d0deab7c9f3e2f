"""One event bus per proxy run: numbers and stamps each event, then hands it to every outlet in order.

Outlets are plain callables, called on mitmproxy's event loop; they must return at once. An outlet whose work
can block (a file, a network peer) takes the event into its own queue (`QueuedOutlet`) and works it off elsewhere,
so it never delays the proxy or another outlet. An outlet that raises is logged (rate-limited) and skipped: it
never stops the others or the caller.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

from addon.publish.events import Captured, Event, Expired, rfc3339_now
from addon.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

Outlet = Callable[[Event], None]
ImageOutlet = Callable[[Captured | Expired, dict[str, tuple[bytes, str]]], None]
E = TypeVar("E", bound=Event)


class EventBus:
    def __init__(self, run: str | None = None):
        self.run = run or secrets.token_hex(4)
        self.seq = 0
        self._outlets: list[tuple[str, Outlet]] = []
        self._image_outlets: list[tuple[str, ImageOutlet]] = []
        self._errors = RateLimitedLog(logger, interval=30.0)

    def subscribe(self, name: str, outlet: Outlet) -> None:
        self._outlets.append((name, outlet))

    def subscribe_images(self, name: str, outlet: ImageOutlet) -> None:
        """For outlets that keep the pictures (dashboard, save dir): events carry no bytes, so the bus hands the
        parts' bodies (role -> (bytes, format)) of each captured or expired challenge beside its event."""
        self._image_outlets.append((name, outlet))

    def unsubscribe(self, name: str) -> None:
        self._outlets = [(n, o) for n, o in self._outlets if n != name]
        self._image_outlets = [(n, o) for n, o in self._image_outlets if n != name]

    @property
    def wants_images(self) -> bool:
        return bool(self._image_outlets)

    def emit_images(self, event: Captured | Expired, bodies: dict[str, tuple[bytes, str]]) -> None:
        for name, outlet in self._image_outlets:
            try:
                outlet(event, bodies)
            except Exception as e:
                self._errors.error(f"outlet:{name}", f"captcha: the {name} outlet failed on images: "
                                                     f"{type(e).__name__}: {e}")

    def emit(self, event: E) -> E:
        self.seq += 1
        event.seq = self.seq
        event.run = self.run
        event.time = rfc3339_now()
        for name, outlet in self._outlets:
            try:
                outlet(event)
            except Exception as e:
                self._errors.error(f"outlet:{name}", f"captcha: the {name} outlet failed on an event: "
                                                     f"{type(e).__name__}: {e}")
        return event


class QueuedOutlet:
    """Runs a blocking outlet on a thread of its own, in the order events came, behind an unbounded queue.

    The work behind it (a file write) keeps its own bounded backlog when its target is down; the queue only
    decouples the event loop from the disk. `tick` is called on the thread about every `tick_s` seconds when idle,
    to retry what the target refused.
    """

    def __init__(self, name: str, handle: Callable[[Event], None], tick: Callable[[], None] | None = None,
                 close: Callable[[], None] | None = None, tick_s: float = 0.25):
        self.name = name
        self._handle = handle
        self._tick = tick
        self._close = close
        self._tick_s = tick_s
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._work, name=f"captcha-{name}", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        event.to_json()  # built on the loop, once: the thread only reads it
        with self._idle:
            self._pending += 1
        self._queue.put(event)

    def _work(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=self._tick_s)
            except queue.Empty:
                self._safe(self._tick)
                continue
            if event is None:
                break
            try:
                self._handle(event)
            except Exception:
                logger.exception("captcha: the %s outlet failed", self.name)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
        self._safe(self._close)

    def _safe(self, call: Callable[[], None] | None) -> None:
        if call is None:
            return
        try:
            call()
        except Exception:
            logger.exception("captcha: the %s outlet failed", self.name)

    def drain(self, timeout: float | None = None) -> bool:
        """Waits until every event handed in so far has been handled (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Handles what is queued, runs `close` on the thread, and returns when it has finished."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
