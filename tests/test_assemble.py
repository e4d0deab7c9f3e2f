from __future__ import annotations

import functools
import hashlib
import operator
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from addon.capture.assemble import Assembler, Captured, Expired, ImagePart, Outcome, make_part
from addon.capture.images import ImageInfo, Role
from addon.capture.recognise import AnnouncedChallenge, Kind, url_key

SIZES = {Role.OUTER: (347, 347), Role.INNER: (211, 211), Role.BACKGROUND: (552, 344), Role.PIECE: (110, 110)}
CDN = "https://p16-rc-captcha-va.ibyteimg.com"
BACKUP = "https://p19-rc-captcha-va.ibyteimg.com"


def part(role: Role, url: str, tag: str) -> ImagePart:
    w, h = SIZES[role]
    return make_part(role, url, f"{tag}:{role}".encode(), ImageInfo("png", w, h, role is not Role.BACKGROUND))


def announce(cid: str, kind: Kind, mode: str | None = None) -> AnnouncedChallenge:
    roles = (Role.OUTER, Role.INNER) if kind is Kind.ROTATE else (Role.BACKGROUND, Role.PIECE)
    urls = {r: (f"{CDN}/tos/{cid}-{r}~tplv-1.png", f"{BACKUP}/tos/{cid}-{r}~tplv-1.png") for r in roles}
    return AnnouncedChallenge(
        id=cid,
        mode=mode or ("whirl" if kind is Kind.ROTATE else "slide"),
        kind=kind,
        urls=urls,
        tip_y=12.0 if kind is Kind.SLIDE else None,
    )


def feed(
    a: Assembler, ch: AnnouncedChallenge, role: Role, now: float, backup: bool = False, client: str = "dev1"
) -> list[Outcome]:
    url = ch.urls[role][1 if backup else 0]
    return a.add_announced_image(url_key(url), client, part(role, url, ch.id), now)


def test_whirl_from_get_in_either_order_with_duplicates_and_backup_host() -> None:
    a = Assembler(window=30)
    ch = announce("c1", Kind.ROTATE)
    assert a.announce("dev1", [ch], 0.0) == []
    assert feed(a, ch, Role.INNER, 1.0, backup=True) == []
    assert feed(a, ch, Role.INNER, 1.1) == []
    [captured] = feed(a, ch, Role.OUTER, 1.2)
    assert isinstance(captured, Captured)
    assert (captured.challenge_id, captured.client, captured.kind, captured.source) == (
        "c1",
        "dev1",
        Kind.ROTATE,
        "get",
    )
    assert set(captured.images) == {Role.OUTER, Role.INNER}
    assert captured.images[Role.INNER].url.startswith(BACKUP)
    assert feed(a, ch, Role.OUTER, 2.0) == []
    assert a.tick(100.0) == []


def test_slide_waits_briefly_for_its_piece() -> None:
    a = Assembler(window=30, piece_grace=1.5)
    ch = announce("s1", Kind.SLIDE)
    a.announce("dev1", [ch], 0.0)
    assert feed(a, ch, Role.BACKGROUND, 0.1) == []
    [c] = feed(a, ch, Role.PIECE, 0.5)
    assert isinstance(c, Captured) and set(c.images) == {Role.BACKGROUND, Role.PIECE} and c.tip_y == 12.0

    ch2 = announce("s2", Kind.SLIDE)
    a.announce("dev1", [ch2], 10.0)
    assert feed(a, ch2, Role.BACKGROUND, 10.1) == []
    assert a.tick(11.0) == []
    [late] = a.tick(11.7)
    assert isinstance(late, Captured) and set(late.images) == {Role.BACKGROUND}


def test_refresh_replaces_unfinished_challenge() -> None:
    a = Assembler(window=30)
    old, new = announce("old", Kind.ROTATE), announce("new", Kind.ROTATE)
    a.announce("dev1", [old], 0.0)
    feed(a, old, Role.OUTER, 0.5)
    [expired] = a.announce("dev1", [new], 1.0)
    assert isinstance(expired, Expired) and expired.challenge_id == "old" and expired.reason == "replaced"
    assert feed(a, old, Role.INNER, 1.5) == []
    feed(a, new, Role.OUTER, 2.0)
    [c] = feed(a, new, Role.INNER, 2.1)
    assert isinstance(c, Captured) and c.challenge_id == "new"


def test_parts_that_never_complete_expire_after_the_window() -> None:
    a = Assembler(window=30)
    ch = announce("w", Kind.ROTATE)
    a.announce("dev1", [ch], 0.0)
    feed(a, ch, Role.OUTER, 1.0)
    assert a.tick(29.0) == []
    [e] = a.tick(30.5)
    assert isinstance(e, Expired) and e.kind is Kind.ROTATE and set(e.images) == {Role.OUTER}


def test_3d_in_a_list_is_ignored_and_sibling_dropped_on_capture() -> None:
    a = Assembler(window=30)
    whirl = announce("w", Kind.ROTATE)
    three_d = AnnouncedChallenge(id="d", mode="3d", kind=None, urls={Role.BACKGROUND: (f"{CDN}/tos/3d.png",)})
    slide = announce("s", Kind.SLIDE)
    a.announce("dev1", [whirl, three_d, slide], 0.0)
    assert a.add_announced_image(url_key(f"{CDN}/tos/3d.png"), "dev1", part(Role.BACKGROUND, "x", "3d"), 0.1) == []
    feed(a, whirl, Role.OUTER, 0.2)
    [c] = feed(a, whirl, Role.INNER, 0.3)
    assert isinstance(c, Captured)
    assert a.tick(100) == []


def test_geometry_pairs_and_a_lone_background_is_never_a_slide() -> None:
    a = Assembler(window=30)
    assert a.add_geometry_image("dev1", part(Role.BACKGROUND, "u-bg", "g1"), 0.0) == []
    assert a.add_geometry_image("dev2", part(Role.OUTER, "u-o", "g2"), 0.1) == []
    [c] = a.add_geometry_image("dev2", part(Role.INNER, "u-i", "g2"), 0.2)
    assert (
        isinstance(c, Captured) and c.client == "dev2" and c.source == "geometry" and c.challenge_id.startswith("geo-")
    )
    assert a.add_geometry_image("dev2", part(Role.INNER, "u-i", "g2"), 0.3) == []
    [e] = a.tick(31.0)
    assert isinstance(e, Expired) and e.kind is None and e.client == "dev1"


def test_pending_is_bounded() -> None:
    a = Assembler(window=30, max_pending=10)
    out: list[Outcome] = []
    for i in range(30):
        ch = announce(f"c{i}", Kind.ROTATE)
        out += a.announce(f"dev{i}", [ch], 0.0)
        out += feed(a, ch, Role.OUTER, 0.0)
    assert a.pending_count == 10
    assert sum(isinstance(o, Expired) and o.reason == "overflow" for o in out) >= 19


@dataclass(frozen=True)
class Plan:
    client: str
    cid: str
    kind: Kind
    via_get: bool
    order: tuple[Role, ...]
    duplicate: bool
    backup: bool


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Plan], list[int]]:
    n_clients = draw(st.integers(1, 12))
    plans: list[list[Plan]] = []
    for ci in range(n_clients):
        mine = []
        for k in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from([Kind.ROTATE, Kind.SLIDE]))
            roles = [Role.OUTER, Role.INNER] if kind is Kind.ROTATE else [Role.BACKGROUND, Role.PIECE]
            order = tuple(draw(st.permutations(roles)))
            mine.append(
                Plan(
                    f"10.0.0.{ci}",
                    f"{ci}-{k}",
                    kind,
                    draw(st.booleans()),
                    order,
                    draw(st.booleans()),
                    draw(st.booleans()),
                )
            )
        plans.append(mine)
    steps: list[list[Plan]] = [
        [p] * (1 + len(p.order) + p.duplicate) for p in functools.reduce(operator.iadd, plans, [])
    ]
    total = sum(len(s) for s in steps)
    picks = draw(st.lists(st.integers(0, n_clients - 1), min_size=total * 2, max_size=total * 2))
    return [p for mine in plans for p in mine], picks


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_random_interleavings_of_many_clients_pair_correctly(fleet: tuple[list[Plan], list[int]]) -> None:
    plans, picks = fleet
    queues: dict[str, list[tuple[str, Plan, Role | None]]] = {}
    for p in plans:
        q = queues.setdefault(p.client, [])
        if p.via_get:
            q.append(("get", p, None))
        for role in p.order:
            q.append(("img", p, role))
        if p.duplicate:
            q.append(("img", p, p.order[0]))
    a = Assembler(window=30, piece_grace=1.0)
    announced = {p.cid: announce(p.cid, p.kind) for p in plans}
    out: list[Outcome] = []
    clients = sorted(queues)
    now = 0.0
    for pick in picks + list(range(len(clients))) * 20:
        q = queues[clients[pick % len(clients)]]
        if not q:
            continue
        step, p, role = q.pop(0)
        now += 0.01
        if step == "get":
            out += a.announce(p.client, [announced[p.cid]], now)
        elif p.via_get:
            assert role is not None
            out += feed(a, announced[p.cid], role, now, backup=p.backup, client=p.client)
        else:
            assert role is not None
            out += a.add_geometry_image(p.client, part(role, f"geo/{p.cid}/{role}", p.cid), now)
    out += a.tick(now + 5)
    captured = [o for o in out if isinstance(o, Captured)]
    assert not [o for o in out if isinstance(o, Expired)]
    assert len(captured) == len(plans)
    by_plan = {p.cid: p for p in plans}
    for c in captured:
        shas = {p.sha256 for p in c.images.values()}
        owners = {
            cid
            for cid in by_plan
            if hashlib.sha256(f"{cid}:{Role.OUTER}".encode()).hexdigest() in shas
            or hashlib.sha256(f"{cid}:{Role.BACKGROUND}".encode()).hexdigest() in shas
        }
        assert len(owners) == 1
        plan = by_plan[owners.pop()]
        assert c.client == plan.client and c.kind is plan.kind
        if plan.via_get:
            assert c.challenge_id == plan.cid
        for role, img in c.images.items():
            assert img.sha256 == hashlib.sha256(f"{plan.cid}:{role}".encode()).hexdigest()
        expected = {Role.OUTER, Role.INNER} if plan.kind is Kind.ROTATE else {Role.BACKGROUND, Role.PIECE}
        assert set(c.images) == expected


def test_the_same_image_path_announced_to_two_clients_stays_with_each() -> None:
    a = Assembler(window=30)
    first, second = announce("c-a", Kind.ROTATE), announce("c-b", Kind.ROTATE)
    second = AnnouncedChallenge(id="c-b", mode="whirl", kind=Kind.ROTATE, urls=first.urls)
    a.announce("dev1", [first], 0.0)
    a.announce("dev2", [second], 0.1)
    assert feed(a, first, Role.OUTER, 0.2, client="dev1") == []
    assert feed(a, first, Role.OUTER, 0.3, client="dev2") == []
    [c1] = feed(a, first, Role.INNER, 0.4, client="dev1")
    [c2] = feed(a, first, Role.INNER, 0.5, client="dev2")
    assert isinstance(c1, Captured) and isinstance(c2, Captured)
    assert (c1.challenge_id, c1.client, c2.challenge_id, c2.client) == ("c-a", "dev1", "c-b", "dev2")
