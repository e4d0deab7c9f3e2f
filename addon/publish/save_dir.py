"""`captcha_save_dir`: every captured challenge's images and events on disk, one folder per challenge.

Layout: ``<root>/<YYYYMMDD>/<challenge id, sanitised>/`` holding the images as served (``outer.png``,
``inner.jpg``, ``background.jpg``, ``piece.png``...), ``events.jsonl`` (every event of that challenge, one JSON
object a line) and, once the site accepted the addon's answer, ``label.json``: a labelled real sample. The
whole tree is bounded in bytes; the oldest challenge folders go first. Directories are made 0700, files 0600.

Nothing here touches the disk on the caller's thread: the calls queue the work for one worker thread (bounded
queue; when it is full the work is dropped, counted, and reported in one rate-limited log line).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from addon.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}
EVENTS_FILE = "events.jsonl"
LABEL_FILE = "label.json"
MAX_NAME = 96
QUEUE_SIZE = 256
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DATE_DIR = re.compile(r"^\d{8}$")
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def safe_name(text: str) -> str:
    """A file name made of ``[A-Za-z0-9._-]`` that cannot climb out of its folder (no ``/``, never ``.``/``..`` or
    hidden). A name that had to be changed gets a hash of the original, so two ids never share one folder."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".")[:MAX_NAME]
    if cleaned == text and cleaned:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{cleaned[: MAX_NAME - 17]}-{digest}" if cleaned else f"id-{digest}"


def _day_of(event: Mapping[str, Any]) -> str:
    stamp = event.get("time")
    if isinstance(stamp, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", stamp):
        return stamp[:10].replace("-", "")
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")


def _line(event: Mapping[str, Any]) -> bytes:
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
    return text.encode("utf-8", "backslashreplace")


class SaveDir:
    """The outlet. ``on_captured`` with the captured event and its image bytes by role, ``on_event`` with every
    other event (a ``captured`` event given there is ignored: its folder is made by ``on_captured``).
    ``close()`` writes what is queued, then stops the worker."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int, *, queue_size: int = QUEUE_SIZE):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.dropped = 0
        """Work items refused because the queue was full (the caller's thread reads and writes it)."""
        self.bytes_used = 0
        """Bytes in the folders the worker knows of (the worker's thread writes it)."""
        self._folders: OrderedDict[str, int] = OrderedDict()
        """``YYYYMMDD/name`` -> bytes, oldest first. By hand rather than cachetools: a folder's size is known once
        written and grows with later events, and evicting one deletes it from the disk."""
        self._by_name: dict[str, str] = {}
        self._queue: queue.Queue[tuple[str, dict[str, Any], Mapping[str, bytes]] | None] = queue.Queue(queue_size)
        self._closed = False
        self._full_log = RateLimitedLog(logger, interval=30.0)
        self._disk_log = RateLimitedLog(logger, interval=30.0)
        self._thread = threading.Thread(target=self._work, name="captcha-save-dir", daemon=True)
        self._thread.start()

    # -- the caller's side (mitmproxy's event loop) -----------------------------------------------------------

    def on_captured(self, event: dict[str, Any], images: Mapping[str, bytes]) -> None:
        self._put(("captured", event, dict(images)))

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") != "captured":
            self._put(("event", event, {}))

    def _put(self, item: tuple[str, dict[str, Any], Mapping[str, bytes]]) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self._full_log.warning("full", f"captcha: captcha_save_dir {str(self.root)!r} is not keeping up; "
                                           f"{self.dropped} challenge event(s) not saved so far")

    def close(self, timeout: float = 30.0) -> None:
        """Writes everything queued so far, then stops the worker (at most ``timeout`` seconds)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.error(f"captcha: captcha_save_dir {str(self.root)!r}: could not finish writing in {timeout:g}s")
            return
        self._thread.join(timeout)
        if self.dropped:
            logger.warning(f"captcha: captcha_save_dir {str(self.root)!r}: {self.dropped} challenge event(s) "
                           "were not saved because the disk did not keep up")

    # -- the worker thread ------------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._scan()
        except OSError as e:
            self._disk_log.error("scan", f"captcha: captcha_save_dir {str(self.root)!r} cannot be read: {e}")
        while True:
            item = self._queue.get()
            if item is None:
                return
            what, event, images = item
            try:
                if what == "captured":
                    self._captured(event, images)
                else:
                    self._event(event)
            except OSError as e:
                self._disk_log.error("write", f"captcha: captcha_save_dir {str(self.root)!r}: cannot save "
                                              f"challenge {str(event.get('challenge'))[:100]!r}: {e}")
            except Exception:
                logger.exception("captcha: captcha_save_dir failed on an event")

    def _scan(self) -> None:
        """Folders left by earlier runs count against the bound, oldest (by day, then time) first."""
        found: list[tuple[str, float, str, int]] = []
        if not self.root.is_dir():
            return
        for day in os.scandir(self.root):
            if not (day.is_dir(follow_symlinks=False) and _DATE_DIR.match(day.name)):
                continue
            for folder in os.scandir(day.path):
                if folder.is_dir(follow_symlinks=False):
                    found.append((day.name, folder.stat(follow_symlinks=False).st_mtime, folder.name,
                                  _size_of(folder.path)))
        for day_name, _mtime, name, size in sorted(found):
            key = f"{day_name}/{name}"
            self._folders[key] = size
            self._by_name[name] = key
            self.bytes_used += size
        self._evict()

    def _captured(self, event: dict[str, Any], images: Mapping[str, bytes]) -> None:
        name = safe_name(str(event.get("challenge", "")))
        key = self._by_name.get(name) or f"{_day_of(event)}/{name}"
        folder = self.root / key
        _make_dirs(self.root, folder)
        described = event.get("images")
        for role, body in images.items():
            info = described.get(role) if isinstance(described, dict) else None
            fmt = info.get("format") if isinstance(info, dict) else None
            _write(folder / f"{safe_name(role)}.{EXTENSIONS.get(str(fmt), 'bin')}", body)
        _append(folder / EVENTS_FILE, _line(event))
        self._account(key, name, folder)

    def _event(self, event: dict[str, Any]) -> None:
        name = safe_name(str(event.get("challenge", "")))
        key = self._by_name.get(name)
        if key is None:
            return  # not a challenge this folder holds (never captured here, or already evicted)
        folder = self.root / key
        _append(folder / EVENTS_FILE, _line(event))
        if event.get("event") == "verified" and event.get("accepted") is True:
            self._label(folder, event)
        self._account(key, name, folder)

    def _label(self, folder: Path, verified: dict[str, Any]) -> None:
        solved: dict[str, Any] | None = None
        with open(folder / EVENTS_FILE, "rb") as f:
            for raw in f:
                with contextlib.suppress(ValueError):
                    record = json.loads(raw)
                    if isinstance(record, dict) and record.get("event") == "solved":
                        solved = record
        if solved is None:
            return  # accepted, but the answer was not the addon's: nothing to label with
        label = {
            "challenge": verified.get("challenge"), "kind": solved.get("kind"), "answer": solved.get("answer"),
            "result": solved.get("result"), "service": solved.get("service"), "verified": True,
            "verified_at": verified.get("time"),
            "images": sorted(p.name for p in folder.iterdir() if p.name not in (EVENTS_FILE, LABEL_FILE)),
        }
        _write(folder / LABEL_FILE, (json.dumps(label, ensure_ascii=False, indent=1) + "\n").encode())

    def _account(self, key: str, name: str, folder: Path) -> None:
        size = _size_of(str(folder))
        self.bytes_used += size - self._folders.get(key, 0)
        if key not in self._folders:
            self._by_name[name] = key
        self._folders[key] = size
        self._evict()

    def _evict(self) -> None:
        while self.bytes_used > self.max_bytes and self._folders:
            key, size = self._folders.popitem(last=False)
            self._by_name.pop(key.partition("/")[2], None)
            self.bytes_used -= size
            folder = self.root / key
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # the day's folder, once empty


def _make_dirs(root: Path, folder: Path) -> None:
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
    for path in (root, folder.parent, folder):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        path.chmod(0o700)  # mkdir's mode is narrowed by the umask only; be explicit


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, _FILE_FLAGS | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _append(path: Path, line: bytes) -> None:
    fd = os.open(path, _FILE_FLAGS | os.O_APPEND, 0o600)
    try:
        _write_all(fd, line)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _size_of(path: str) -> int:
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total
