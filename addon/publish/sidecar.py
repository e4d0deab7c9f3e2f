"""The JSON Lines file every event is appended to: whole lines only, created 0600, resuming after disk faults."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import deque
from typing import Any

from addon.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

MAX_BACKLOG = 50_000
"""Lines kept in memory while the file cannot be written; beyond it the oldest are dropped (and counted)."""


def encode(record: dict[str, Any]) -> bytes:
    # A lone surrogate can only sit inside a JSON string, where backslashreplace turns it into a valid \\u escape.
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "backslashreplace")


class SidecarWriter:
    """Each line goes out in one write() on an O_APPEND descriptor; a failed or short write is cut back off."""

    def __init__(self, path: str):
        self.path = path
        self.backlog: deque[bytes] = deque()
        self.dropped = 0
        self._fd: int | None = None
        self._errors = RateLimitedLog(logger, interval=30.0)

    def write(self, record: dict[str, Any]) -> None:
        if len(self.backlog) >= MAX_BACKLOG:
            self.backlog.popleft()
            self.dropped += 1
        self.backlog.append(encode(record))
        self.flush()

    def flush(self) -> bool:
        """Writes what is waiting; returns False while the file cannot be written."""
        while self.backlog:
            try:
                fd = self._open()
                line = self.backlog[0]
                start = os.lseek(fd, 0, os.SEEK_END)
                written = os.write(fd, line)
                if written != len(line):
                    os.ftruncate(fd, start)
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
            except OSError as e:
                self._close()
                self._errors.error("write", f"captcha sidecar {self.path!r} cannot be written ({e}); "
                                   f"{len(self.backlog)} event(s) held in memory until it can")
                return False
            self.backlog.popleft()
        if self.dropped:
            logger.warning(f"captcha sidecar: {self.dropped} event(s) dropped while {self.path!r} was not writable")
            self.dropped = 0
        return True

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _cut_partial_last_line(fd)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        if not self.flush():
            logger.error(f"captcha sidecar: {len(self.backlog)} event(s) could not be written to {self.path!r} "
                         "before the proxy stopped; they are lost (the HTTP API had them)")
        self._close()


def check_writable(path: str) -> None:
    """Opens (creating) the file the way the writer will, or raises OSError saying why it cannot."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)


def _cut_partial_last_line(fd: int) -> None:
    """A process killed mid-write may leave half a line; cut it so readers never see a broken record."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return
    tail_start = max(0, size - 65536)
    tail = os.pread(fd, size - tail_start, tail_start)
    if tail.endswith(b"\n"):
        return
    newline = tail.rfind(b"\n")
    if newline < 0 and tail_start > 0:
        return
    os.ftruncate(fd, tail_start + newline + 1)
