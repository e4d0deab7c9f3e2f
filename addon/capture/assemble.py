"""Collects the parts of each challenge per client and says when one is whole (captured) or never will be (expired)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from addon.capture.images import BadImage, ImageInfo, probe
from addon.capture.recognise import AnnouncedChallenge, url_key
from addon.kinds import GEOMETRY_PAIRS, ROLE_KINDS, SPECS, Kind, Role

PIECE_GRACE = 1.5
"""Seconds a slide whose background is in waits for its piece before it is captured without it."""
MAX_PENDING = 20_000
"""Challenges being assembled at once, all clients together; the oldest expire early beyond it."""



@dataclass(frozen=True, slots=True)
class ImagePart:
    role: Role
    url: str
    sha256: str
    info: ImageInfo
    body: bytes


@dataclass(frozen=True, slots=True)
class Captured:
    challenge_id: str
    client: str
    kind: Kind
    source: str
    images: dict[Role, ImagePart]
    tip_y: float | None
    verify_id: str | None
    question: str | None = None
    """An object captcha's prompt, when the traffic carried it."""
    malformed: str | None = None
    """Why the challenge cannot be solved as announced (it fails at once, unpaid), else None."""


@dataclass(frozen=True, slots=True)
class Expired:
    challenge_id: str
    client: str
    kind: Kind | None
    images: dict[Role, ImagePart]
    reason: str


Outcome = Captured | Expired


@dataclass(slots=True)
class _Pending:
    id: str
    client: str
    kind: Kind
    source: str
    deadline: float
    needs: frozenset[Role]
    optional: frozenset[Role] = frozenset()
    images: dict[Role, ImagePart] = field(default_factory=dict)
    tip_y: float | None = None
    verify_id: str | None = None
    group: int = 0
    keys: tuple[str, ...] = ()
    question: str | None = None
    malformed: str | None = None


@dataclass(slots=True)
class _KeyEntry:
    owners: dict[str, tuple[str | None, Role | None]]
    """Client → (challenge, role) for every get that announced this path, newest last."""
    forget_at: float

    def lookup(self, client: str) -> tuple[str | None, Role | None]:
        # The fetching client's own challenge first; a client key that differs between get and image (a
        # missing device header, say) still finds the newest announcement.
        return self.owners.get(client) or next(reversed(self.owners.values()))


def make_part(role: Role, url: str, body: bytes, info: ImageInfo) -> ImagePart:
    return ImagePart(role, url, hashlib.sha256(body).hexdigest(), info, body)


class Assembler:
    """Pure state machine: callers pass the time in, so tests can drive it without clocks or mitmproxy."""

    def __init__(self, window: float = 30.0, piece_grace: float = PIECE_GRACE, max_pending: int = MAX_PENDING):
        self.window = window
        self.piece_grace = piece_grace
        self.max_pending = max_pending
        # By hand: dropping a pending challenge yields an Expired outcome (an ordered queue, not a cache).
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._by_client: dict[str, dict[str, _Pending]] = {}
        self._keys: dict[str, _KeyEntry] = {}
        # By hand: keys are forgotten at times the caller passes in, which cachetools' TTL caches (a timer) do not take.
        self._key_order: OrderedDict[str, None] = OrderedDict()
        self._latest_get_group: dict[str, int] = {}
        self._grace: dict[str, float] = {}
        self._loose: dict[str, dict[Role, tuple[ImagePart, float]]] = {}
        self._recent_geometry: dict[str, float] = {}
        self._groups = 0

    def is_announced(self, key: str) -> bool:
        return key in self._keys

    @property
    def pending_count(self) -> int:
        return len(self._pending) + sum(len(parts) for parts in self._loose.values())

    def announce(self, client: str, challenges: list[AnnouncedChallenge], now: float) -> list[Outcome]:
        """Registers the challenges of one get response; an unfinished challenge of an earlier get is replaced."""
        out: list[Outcome] = []
        previous = self._latest_get_group.get(client)
        if previous is not None:
            fresh_ids = {ch.id for ch in challenges}
            for pending in list(self._by_client.get(client, {}).values()):
                if pending.group == previous and pending.id not in fresh_ids:
                    out.extend(self._drop(pending, "replaced"))
        self._groups += 1
        group = self._groups
        self._latest_get_group[client] = group
        for ch in challenges:
            keys = tuple(url_key(u) for urls in ch.urls.values() for u in urls)
            if (same := self._pending.get(ch.id)) is not None:
                same.group = group
                continue
            if ch.kind is None:
                for key in keys:
                    self._remember_key(key, client, None, None, now + self.window)
                continue
            spec = SPECS[ch.kind]
            pending = _Pending(
                id=ch.id, client=client, kind=ch.kind, source="get", deadline=now + self.window,
                needs=spec.needs, optional=spec.optional & ch.urls.keys(), tip_y=ch.tip_y,
                verify_id=ch.verify_id, group=group, keys=keys, question=ch.question, malformed=ch.malformed,
            )
            self._pending[ch.id] = pending
            self._by_client.setdefault(client, {})[ch.id] = pending
            for role, urls in ch.urls.items():
                for u in urls:
                    self._remember_key(url_key(u), client, ch.id, role, now + 2 * self.window)
            for role, body in ch.inline.items():
                try:
                    pending.images[role] = make_part(role, f"inline:{ch.id}#{role}", body, probe(body))
                except BadImage:
                    continue
            out.extend(self._check(pending, now))
        if client not in self._by_client:
            self._latest_get_group.pop(client, None)
        out.extend(self._enforce_cap())
        return out

    def role_of(self, key: str, client: str) -> Role | None:
        entry = self._keys.get(key)
        return entry.lookup(client)[1] if entry else None

    def add_announced_image(self, key: str, client: str, part: ImagePart, now: float) -> list[Outcome]:
        """An image whose path a get announced; duplicates and parts of finished challenges are ignored."""
        entry = self._keys.get(key)
        if entry is None:
            return []
        challenge_id = entry.lookup(client)[0]
        if challenge_id is None:
            return []
        pending = self._pending.get(challenge_id)
        if pending is None or part.role in pending.images:
            return []
        pending.images[part.role] = part
        return self._check(pending, now)

    def add_geometry_image(self, client: str, part: ImagePart, now: float) -> list[Outcome]:
        """An image from a captcha host that no get announced, its role told by its geometry."""
        if self._recent_geometry.get(part.sha256, 0.0) > now:
            return []
        if part.role not in GEOMETRY_PAIRS:
            return []
        out: list[Outcome] = []
        loose = self._loose.setdefault(client, {})
        held = loose.get(part.role)
        if held is not None:
            if held[0].sha256 == part.sha256:
                return []
            del loose[part.role]
            out.append(self._expired_loose(client, {part.role: held[0]}, "replaced"))
        partner_role = GEOMETRY_PAIRS[part.role]
        partner = loose.pop(partner_role, None)
        if partner is None:
            loose[part.role] = (part, now + self.window)
            return out
        if not loose:
            del self._loose[client]
        images = {part.role: part, partner_role: partner[0]}
        for p in images.values():
            self._recent_geometry[p.sha256] = now + 2 * self.window
        out.append(Captured(
            challenge_id=_geometry_id(images), client=client, kind=ROLE_KINDS[part.role], source="geometry",
            images=images, tip_y=None, verify_id=None,
        ))
        return out

    def add_signed_image(self, client: str, kind: Kind, part: ImagePart, now: float) -> list[Outcome]:
        """An image no get announced whose path names its kind (`/3d_`, `/icon_`): a challenge of that one image
        (the prompt of an icon is then unknown). Its `source` is `geometry`, as for every challenge without a get."""
        if self._recent_geometry.get(part.sha256, 0.0) > now or SPECS[kind].needs != {part.role}:
            return []
        images = {part.role: part}
        self._recent_geometry[part.sha256] = now + 2 * self.window
        return [Captured(challenge_id=_geometry_id(images), client=client, kind=kind, source="geometry", images=images,
                         tip_y=None, verify_id=None)]

    def tick(self, now: float) -> list[Outcome]:
        """Captures slides whose piece did not come in time, expires what the window ran out on, forgets old keys."""
        out: list[Outcome] = []
        for challenge_id, due in list(self._grace.items()):
            if due <= now and (pending := self._pending.get(challenge_id)):
                out.append(self._capture(pending))
        while self._pending:
            pending = next(iter(self._pending.values()))
            if pending.deadline > now:
                break
            out.extend(self._drop(pending, "window"))
        for client, loose in list(self._loose.items()):
            stale = {role: p for role, (p, due) in loose.items() if due <= now}
            for role, p in stale.items():
                del loose[role]
                out.append(self._expired_loose(client, {role: p}, "window"))
            if not loose:
                del self._loose[client]
        while self._key_order:
            key = next(iter(self._key_order))
            entry = self._keys.get(key)
            if entry is not None and entry.forget_at > now:
                break
            del self._key_order[key]
            self._keys.pop(key, None)
        for sha, due in list(self._recent_geometry.items()):
            if due <= now:
                del self._recent_geometry[sha]
        return out

    def flush(self) -> list[Outcome]:
        """Ends everything still being assembled (shutdown)."""
        out: list[Outcome] = []
        for pending in list(self._pending.values()):
            out.extend(self._drop(pending, "shutdown"))
        for client, loose in list(self._loose.items()):
            for role, (p, _) in loose.items():
                out.append(self._expired_loose(client, {role: p}, "shutdown"))
        self._loose.clear()
        return out

    def _remember_key(
        self, key: str, client: str, challenge_id: str | None, role: Role | None, forget_at: float
    ) -> None:
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _KeyEntry({}, forget_at)
        entry.owners.pop(client, None)
        entry.owners[client] = (challenge_id, role)
        entry.forget_at = max(entry.forget_at, forget_at)
        self._key_order[key] = None
        self._key_order.move_to_end(key)

    def _check(self, pending: _Pending, now: float) -> list[Outcome]:
        have = pending.images.keys()
        if not pending.needs <= have:
            return []
        if pending.optional <= have or self.piece_grace <= 0:
            return [self._capture(pending)]
        self._grace.setdefault(pending.id, now + self.piece_grace)
        return []

    def _forget_pending(self, pending: _Pending) -> None:
        self._pending.pop(pending.id, None)
        self._grace.pop(pending.id, None)
        mine = self._by_client.get(pending.client)
        if mine is not None:
            mine.pop(pending.id, None)
            if not mine:
                del self._by_client[pending.client]
                self._latest_get_group.pop(pending.client, None)

    def _capture(self, pending: _Pending) -> Captured:
        self._forget_pending(pending)
        for sibling in list(self._by_client.get(pending.client, {}).values()):
            if sibling.group == pending.group:
                self._forget_pending(sibling)
        return Captured(
            challenge_id=pending.id, client=pending.client, kind=pending.kind, source=pending.source,
            images=dict(pending.images), tip_y=pending.tip_y, verify_id=pending.verify_id,
            question=pending.question, malformed=pending.malformed,
        )

    def _drop(self, pending: _Pending, reason: str) -> list[Outcome]:
        self._forget_pending(pending)
        if not pending.images:
            return []
        return [Expired(pending.id, pending.client, pending.kind, dict(pending.images), reason)]

    def _expired_loose(self, client: str, images: dict[Role, ImagePart], reason: str) -> Expired:
        # A lone background may be a slide's or nothing at all: only a part that belongs to one kind names it.
        kinds = {ROLE_KINDS[role] for role in images if role in ROLE_KINDS and role is not Role.BACKGROUND}
        kind = kinds.pop() if len(kinds) == 1 else None
        return Expired(_geometry_id(images), client, kind, images, reason)

    def _enforce_cap(self) -> list[Outcome]:
        out: list[Outcome] = []
        while len(self._pending) > self.max_pending:
            out.extend(self._drop(next(iter(self._pending.values())), "overflow"))
        return out


def _geometry_id(images: dict[Role, ImagePart]) -> str:
    digest = hashlib.sha256("|".join(sorted(p.sha256 for p in images.values())).encode()).hexdigest()
    return "geo-" + digest[:32]

