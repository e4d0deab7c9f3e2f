"""The site's verdicts on published answers: what each answered challenge leaves for its verdict (`Answered`), the
cache's marks, the reports to the services that take them, and the adaptive order (a service whose recent
answers the site mostly refuses, for a kind, moves behind the next solver for that kind)."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from addon.solving.background import Background
from addon.solving.base import PaidSolver, Solution
from addon.solving.cache import AnswerCache

logger = logging.getLogger(__name__)

MAX_ANSWERED = 20_000
ADAPTIVE_WINDOW = 50
ADAPTIVE_MIN_VERDICTS = 10


@dataclass(frozen=True, slots=True)
class Answered:
    client: str
    kind: str
    service: str
    cached: bool
    key: str
    job_id: str | int | None = None
    solution: Solution | None = None
    origin: str = ""
    """The challenge this answer was first given to (the one whose job paid for it, when known)."""


@dataclass(frozen=True, slots=True)
class Adaptive:
    on: bool = False
    share: float = 0.5
    """A service accepted for less than this share of its last ADAPTIVE_WINDOW answers of a kind is demoted."""


@dataclass(slots=True)
class Verdicts:
    cache: AnswerCache
    paid: Callable[[str], PaidSolver | None]
    """The paid solver of that name, when the chain has one (the one a report goes to)."""
    background: Background
    adaptive: Adaptive = field(default_factory=Adaptive)
    answered: OrderedDict[str, Answered] = field(default_factory=OrderedDict)
    """Challenge id -> its answer, the latest MAX_ANSWERED."""
    windows: dict[tuple[str, str], deque[bool]] = field(default_factory=dict)
    """(service, kind) -> the site's last verdicts on its answers (adaptive only)."""
    demoted: set[tuple[str, str]] = field(default_factory=set)

    def remember(self, challenge_id: str, answered: Answered) -> None:
        self.answered[challenge_id] = answered
        if len(self.answered) > MAX_ANSWERED:
            self.answered.popitem(last=False)

    def judge(self, challenge_id: str, accepted: bool) -> Answered | None:
        """The site judged the answer of `challenge_id`: a rejected answer leaves the cache and its service is
        marked wrong on those images (left out of their chain while another service is not); an accepted one clears
        that mark and is the answer the cache serves; with `adaptive`, the verdict counts for the service's order."""
        answered = self.answered.get(challenge_id)
        if answered is None:
            return None
        if accepted and answered.solution is not None:
            self.cache.accepted(answered.key, answered.service, answered.solution, answered.origin)
        elif not accepted:
            self.cache.rejected(answered.key, answered.service)
        if self.adaptive.on and not answered.cached:
            self.track(answered.service, answered.kind, accepted)
        self._report(answered, accepted)
        return answered

    def _report(self, answered: Answered, accepted: bool) -> None:
        """Tells a service that takes reports (omocaptcha v2's `report`) how its answer fared; best effort."""
        solver = self.paid(answered.service)
        if solver is None or answered.cached or answered.job_id is None:
            return
        self.background.spawn(solver.report(str(answered.job_id), accepted), f"captcha-report-{answered.service}")

    def track(self, service: str, kind: str, accepted: bool) -> None:
        window = self.windows.setdefault((service, kind), deque(maxlen=ADAPTIVE_WINDOW))
        window.append(accepted)
        if len(window) < ADAPTIVE_MIN_VERDICTS:
            return
        share = sum(window) / len(window)
        key = (service, kind)
        if share < self.adaptive.share and key not in self.demoted:
            self.demoted.add(key)
            logger.warning(f"captcha: {service} was accepted for {share:.0%} of its last {len(window)} {kind} "
                           f"answers; moving it behind the next solver for {kind}")
        elif share >= self.adaptive.share and key in self.demoted:
            self.demoted.discard(key)
            logger.info(f"captcha: {service} is accepted for {share:.0%} of {kind} answers again; back in its place")
