"""Answers already paid for, by image set, and the services the site has proved wrong on an image set."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from addon.capture.assemble import Captured
from addon.solving.base import Solution

MAX_ENTRIES = 10_000
TTL_SECONDS = 6 * 3600.0


def image_key(c: Captured) -> str:
    """The same pictures, whatever the challenge id, URL or client: sha256 over the parts' own sha256s, by role."""
    joined = "|".join(f"{role}:{part.sha256}" for role, part in sorted(c.images.items()))
    return hashlib.sha256(f"{c.kind}|{joined}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    service: str
    solution: Solution
    stored_at: float


class AnswerCache:
    """Bounded by count (oldest out first) and by age; a rejected answer is dropped and its service avoided."""

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._answers: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._wrong: OrderedDict[str, frozenset[str]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> CachedAnswer | None:
        entry = self._answers.get(key)
        if entry is None or self.max_entries == 0:
            return None
        if self.clock() - entry.stored_at > self.ttl:
            del self._answers[key]
            return None
        self.hits += 1
        return entry

    def put(self, key: str, service: str, solution: Solution) -> None:
        if self.max_entries == 0:
            return
        self._answers[key] = CachedAnswer(service, solution, self.clock())
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def rejected(self, key: str, service: str) -> None:
        """The site refused this service's answer for these images: forget it, and never ask that service again."""
        self._answers.pop(key, None)
        self._wrong[key] = self._wrong.get(key, frozenset()) | {service}
        self._wrong.move_to_end(key)
        while len(self._wrong) > self.max_entries:
            self._wrong.popitem(last=False)

    def wrong_services(self, key: str) -> frozenset[str]:
        return self._wrong.get(key, frozenset())
