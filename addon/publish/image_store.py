"""The recent challenges' images and answers behind the dashboard, bounded in count and bytes (oldest go first)."""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from addon.publish.answer_picture import PictureError, draw_answer

logger = logging.getLogger(__name__)

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
PLACEHOLDER_SIZE = (120, 80)


@dataclass(slots=True)
class _Entry:
    images: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    kind: str | None = None
    tip_y: float | None = None
    answer: dict[str, Any] | None = None
    picture: bytes | None = None
    version: int = 0
    """Bumped by every change that makes a drawn picture stale, so a render that raced one is not cached."""

    @property
    def size(self) -> int:
        return sum(len(body) for body, _ in self.images.values()) + len(self.picture or b"")


class ImageStore:
    """Kept per challenge: its image bytes by role, its kind (and slide tip_y), its answer and the drawn answer.

    Thread-safe, so the lead may render `answer_png` in a worker thread; rendering itself runs outside the lock.
    A challenge bigger than `max_bytes` on its own is not kept at all.
    """

    def __init__(self, max_challenges: int, max_bytes: int):
        if max_challenges < 0 or max_bytes < 0:
            raise ValueError("the image store's bounds must not be negative")
        self.max_challenges = max_challenges
        self.max_bytes = max_bytes
        self.bytes_used = 0
        # By hand rather than cachetools: an entry grows after it is stored (parts one by one, the drawn answer
        # later) and both bounds follow options changed at run time; a cachetools cache sizes an item when it is set.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, challenge_id: object) -> bool:
        return challenge_id in self._entries

    def resize(self, max_challenges: int, max_bytes: int) -> None:
        """New bounds (an option changed); the oldest challenges go at once if they are now passed."""
        if max_challenges < 0 or max_bytes < 0:
            raise ValueError("the image store's bounds must not be negative")
        with self._lock:
            self.max_challenges, self.max_bytes = max_challenges, max_bytes
            self._evict()

    def put(self, challenge_id: str, role: str, body: bytes, fmt: str) -> None:
        content_type = CONTENT_TYPES.get(fmt, "application/octet-stream")
        with self._lock:
            entry = self._entry(challenge_id)
            old = entry.images.get(role)
            self.bytes_used += len(body) - (len(old[0]) if old else 0)
            entry.images[role] = (body, content_type)
            self._stale(entry)
            self._evict()

    def set_kind(self, challenge_id: str, kind: str | None, tip_y: float | None = None) -> None:
        """From the captured event: the kind, and for a slide the piece's row when the get gave it."""
        with self._lock:
            entry = self._entries.get(challenge_id)
            if entry is not None:
                entry.kind, entry.tip_y = kind, tip_y
                self._stale(entry)

    def set_answer(self, challenge_id: str, answer_json: Mapping[str, Any], kind: str | None,
                   tip_y: float | None = None) -> None:
        """The solved event's `answer`; ignored for a challenge whose images are not (or no longer) here."""
        with self._lock:
            entry = self._entries.get(challenge_id)
            if entry is None:
                return
            entry.answer = dict(answer_json)
            if kind is not None:
                entry.kind = kind
            if tip_y is not None:
                entry.tip_y = tip_y
            self._stale(entry)

    def get(self, challenge_id: str, role: str) -> tuple[bytes, str] | None:
        with self._lock:
            entry = self._entries.get(challenge_id)
            return entry.images.get(role) if entry else None

    def answer_png(self, challenge_id: str) -> bytes | None:
        """The answer drawn on the images (PNG), rendered once; None without images, answer or a drawable pair."""
        with self._lock:
            entry = self._entries.get(challenge_id)
            if entry is None or entry.answer is None or entry.kind is None:
                return None
            if entry.picture is not None:
                return entry.picture
            kind, answer, tip_y, version = entry.kind, entry.answer, entry.tip_y, entry.version
            images = {role: body for role, (body, _) in entry.images.items()}
        try:
            picture = draw_answer(kind, images, answer, tip_y)
        except PictureError as e:
            logger.info("no answer picture for challenge %s: %s", challenge_id, e)
            return None
        except Exception:
            logger.exception("drawing the answer of challenge %s failed", challenge_id)
            return None
        with self._lock:
            if self._entries.get(challenge_id) is entry and entry.version == version and entry.picture is None:
                entry.picture = picture
                self.bytes_used += len(picture)
                self._evict()
        return picture

    def placeholder_png(self) -> bytes:
        return _placeholder()

    def _entry(self, challenge_id: str) -> _Entry:
        entry = self._entries.get(challenge_id)
        if entry is None:
            entry = self._entries[challenge_id] = _Entry()
        return entry

    def _stale(self, entry: _Entry) -> None:
        entry.version += 1
        if entry.picture is not None:
            self.bytes_used -= len(entry.picture)
            entry.picture = None

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_challenges or self.bytes_used > self.max_bytes):
            _, entry = self._entries.popitem(last=False)
            self.bytes_used -= entry.size


@functools.cache
def _placeholder() -> bytes:
    img = Image.new("RGB", PLACEHOLDER_SIZE, (200, 200, 200))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), "evicted", font=font)
    x = (PLACEHOLDER_SIZE[0] - (right - left)) / 2 - left
    y = (PLACEHOLDER_SIZE[1] - (bottom - top)) / 2 - top
    draw.text((x, y), "evicted", fill=(90, 90, 90), font=font)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()
