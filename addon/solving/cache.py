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
    challenge: str = ""
    """The challenge whose job gave this answer."""
    asked: int = 0
    """`AnswerCache.marks` when the service was asked: an answer asked for before its service was proved wrong on
    these images may be the wrong answer again, and is not served; one asked for after it is a new answer."""


class AnswerCache:
    """Bounded by count (oldest out first) and by age. A rejected answer is dropped and its service marked wrong on
    those images (the scheduler then asks the others first); an accepted one clears its service's mark and is the
    answer served from then on."""

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        # By hand rather than cachetools' TTLCache: both bounds are options changed at run time (a lowered ttl
        # applies at once to what is kept), where a cachetools cache fixes its maxsize and ttl when it is made.
        self._answers: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._wrong: OrderedDict[str, dict[str, int]] = OrderedDict()
        """Image set -> service -> the number of the rejection that marked it wrong."""
        self.marks = 0
        """Rejections so far: the clock that `CachedAnswer.asked` is read on."""
        self.hits = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> CachedAnswer | None:
        """The answer to serve for these images, if any: not too old, and not asked for before its service was
        proved wrong on them."""
        entry = self._answers.get(key)
        if entry is None or self.max_entries == 0:
            return None
        if self.clock() - entry.stored_at > self.ttl:
            del self._answers[key]
            return None
        mark = self._wrong.get(key, {}).get(entry.service)
        if mark is not None and entry.asked < mark:
            return None
        self.hits += 1
        return entry

    def put(self, key: str, service: str, solution: Solution, challenge: str = "", asked: int | None = None) -> None:
        """`asked`: `marks` when the service was asked for it (now, when not given)."""
        if self.max_entries == 0:
            return
        self._answers[key] = CachedAnswer(service, solution, self.clock(), challenge,
                                          self.marks if asked is None else asked)
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def rejected(self, key: str, service: str) -> None:
        """The site refused this service's answer for these images: forget it, and mark the service wrong on them."""
        entry = self._answers.get(key)
        if entry is not None and entry.service == service:
            del self._answers[key]
        self.marks += 1
        self._wrong.setdefault(key, {})[service] = self.marks
        self._wrong.move_to_end(key)
        while len(self._wrong) > self.max_entries:
            self._wrong.popitem(last=False)

    def accepted(self, key: str, service: str, solution: Solution, challenge: str = "") -> None:
        """The site took this answer: the best answer there is for these images. Its service is no longer marked
        wrong on them, and it is the answer the cache serves (whatever another job stored meanwhile)."""
        marked = self._wrong.get(key)
        if marked is not None:
            marked.pop(service, None)
            if not marked:
                del self._wrong[key]
        self.put(key, service, solution, challenge)

    def wrong_services(self, key: str) -> frozenset[str]:
        return frozenset(self._wrong.get(key, ()))
