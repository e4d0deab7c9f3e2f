"""`CaptchaEvents`: the outlets every event goes to: the board behind the HTTP API, log lines, the sidecar file."""

from __future__ import annotations

import logging
import os
from typing import Any

from mitmproxy import ctx, exceptions

from addon.mitm import option_table
from addon.publish.board import Board
from addon.publish.bus import EventBus, QueuedOutlet
from addon.publish.dashboard_api import Dashboard
from addon.publish.events import Event
from addon.publish.logline import log_event
from addon.publish.save_dir import SaveDir
from addon.publish.sidecar import SidecarWriter, check_writable

logger = logging.getLogger(__name__)


class CaptchaEvents:
    def __init__(self, bus: EventBus, board: Board):
        self.bus = bus
        self.board = board
        self.sidecar: SidecarWriter | None = None
        self._sidecar_queue: QueuedOutlet | None = None
        self.dashboard: Dashboard | None = None
        self.save_dir: SaveDir | None = None
        bus.subscribe("board", board.add)
        bus.subscribe("log", log_event)

    def load(self, loader: Any) -> None:
        option_table.declare(loader, "events")

    def configure(self, updated: set[str]) -> None:
        o = ctx.options
        if self.dashboard is not None:
            if "captcha_metrics_by_client" in updated:
                self.dashboard.metrics.set_by_client(o.captcha_metrics_by_client)
            if {"captcha_dashboard_challenges", "captcha_dashboard_mb"} & updated:
                self.dashboard.images.resize(o.captcha_dashboard_challenges, o.captcha_dashboard_mb * 1024 * 1024)
        if {"captcha_save_dir", "captcha_save_max_mb"} & updated:
            self._close_save_dir()
            root = os.path.expanduser(o.captcha_save_dir)
            if root:
                save = self.save_dir = SaveDir(root, o.captcha_save_max_mb * 1024 * 1024)
                self.bus.subscribe("save-dir", lambda event: save.on_event(event.to_json()))
                self.bus.subscribe_images("save-dir", self._save_images(save))
        if "captcha_sidecar" in updated:
            path = os.path.expanduser(ctx.options.captcha_sidecar)
            if path:
                try:
                    check_writable(path)
                except OSError as e:
                    raise exceptions.OptionsError(
                        f"captcha_sidecar={ctx.options.captcha_sidecar!r}: cannot write there ({e.strerror or e}); "
                        'give a writable file, or "" to turn the sidecar off') from None
            self._close_sidecar()
            if path:
                writer = self.sidecar = SidecarWriter(path)
                self._sidecar_queue = QueuedOutlet("sidecar", self._write_to(writer), tick=self._retry(writer),
                                                   close=writer.close)
                self.bus.subscribe("sidecar", self._sidecar_queue)

    @staticmethod
    def _write_to(writer: SidecarWriter) -> Any:
        def write(event: Event) -> None:
            writer.write(event.to_json())
        return write

    @staticmethod
    def _retry(writer: SidecarWriter) -> Any:
        def retry() -> None:
            if writer.backlog:
                writer.flush()
        return retry

    @staticmethod
    def _save_images(save: SaveDir) -> Any:
        def keep(event: Event, bodies: dict[str, tuple[bytes, str]]) -> None:
            if event.name == "captured":  # an expired challenge's parts are not a sample
                save.on_captured(event.to_json(), {role: body for role, (body, _fmt) in bodies.items()})
        return keep

    def _close_save_dir(self) -> None:
        self.bus.unsubscribe("save-dir")
        if self.save_dir is not None:
            self.save_dir.close()
        self.save_dir = None

    def _close_sidecar(self) -> None:
        self.bus.unsubscribe("sidecar")
        if self._sidecar_queue is not None:
            self._sidecar_queue.stop()
        self._sidecar_queue = None
        self.sidecar = None

    def drain(self, timeout: float = 5.0) -> None:
        """Waits until the sidecar has written (or held) every event emitted so far."""
        if self._sidecar_queue is not None:
            self._sidecar_queue.drain(timeout)

    def done(self) -> None:
        self._close_save_dir()
        self._close_sidecar()
