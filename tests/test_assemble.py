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
    # The oldest go first, each the moment the eleventh is announced, with the part it had.
    expired = [(o.challenge_id, o.reason, set(o.images)) for o in out if isinstance(o, Expired)]
    assert expired == [(f"c{i}", "overflow", {Role.OUTER}) for i in range(20)]
    assert not [o for o in out if not isinstance(o, Expired)]


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


@settings(max_examples=100, deadline=None)  # random each run: over many runs it covers far more than 300 once
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


# ---------------------------------------------------------------------------------------------------------------
# Edges of the rules, one at a time (each holds a line the random interleavings above do not reach)


def png_body(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", size).save(out, "PNG")
    return out.getvalue()


def test_defaults_and_parts() -> None:
    a = Assembler()
    assert (a.window, a.piece_grace, a.max_pending, a.pending_count) == (30.0, 1.5, 20_000, 0)
    p = make_part(Role.OUTER, "u", b"body", ImageInfo("png", 1, 1, True))
    assert (p.role, p.url, p.sha256, p.body) == (Role.OUTER, "u", hashlib.sha256(b"body").hexdigest(), b"body")


def test_a_challenge_served_again_joins_the_newer_get_and_the_rest_of_that_get_is_kept() -> None:
    a = Assembler(window=30)
    first, other = announce("a", Kind.ROTATE), announce("c", Kind.ROTATE)
    a.announce("dev1", [first], 0.0)
    feed(a, first, Role.OUTER, 0.1)
    assert a.announce("dev1", [first, other], 0.2) == []  # "a" again, and "c" after it
    [c] = feed(a, other, Role.OUTER, 0.3) + feed(a, other, Role.INNER, 0.4)
    assert isinstance(c, Captured) and c.challenge_id == "c"
    # "c" was captured and its sibling "a" (same get) went with it, without an event.
    assert a.tick(100) == [] and a.pending_count == 0


def test_a_challenge_served_again_is_replaced_by_the_next_get() -> None:
    a = Assembler(window=30)
    first, later = announce("a", Kind.ROTATE), announce("b", Kind.ROTATE)
    a.announce("dev1", [first], 0.0)
    feed(a, first, Role.OUTER, 0.1)
    a.announce("dev1", [first], 0.2)
    [e] = a.announce("dev1", [later], 0.3)
    assert isinstance(e, Expired) and (e.challenge_id, e.client, e.reason) == ("a", "dev1", "replaced")


def test_out_of_scope_challenges_are_announced_but_never_assembled() -> None:
    a = Assembler(window=30)
    three_d = AnnouncedChallenge(id="d", mode="3d", kind=None, urls={Role.BACKGROUND: (f"{CDN}/tos/3d.png",)})
    whirl = announce("w", Kind.ROTATE)
    assert a.announce("dev1", [three_d], 0.0) == []  # alone: no pending challenge for dev1
    key = url_key(f"{CDN}/tos/3d.png")
    assert a.is_announced(key) and a.role_of(key, "dev1") is None and a.pending_count == 0
    a.announce("dev1", [three_d, whirl], 1.0)
    feed(a, whirl, Role.OUTER, 1.1)
    [c] = feed(a, whirl, Role.INNER, 1.2)
    assert isinstance(c, Captured) and c.challenge_id == "w"
    # Its path is remembered for one window after the last get that named it, a challenge's for two.
    assert a.tick(30.9) == [] and a.is_announced(key)
    a.tick(31.0)
    assert not a.is_announced(key) and a.is_announced(url_key(whirl.urls[Role.OUTER][1]))
    a.tick(62.0)
    assert not a.is_announced(url_key(whirl.urls[Role.OUTER][0]))


def test_announced_paths_are_forgotten_two_windows_after_their_get() -> None:
    a = Assembler(window=10)
    ch = announce("w", Kind.ROTATE)
    a.announce("dev1", [ch], 0.0)
    keys = [url_key(u) for urls in ch.urls.values() for u in urls]
    a.tick(19.99)
    assert all(a.is_announced(k) for k in keys)
    a.tick(20.0)
    assert not any(a.is_announced(k) for k in keys)
    assert a.role_of(keys[0], "dev1") is None and a.add_announced_image(keys[0], "dev1", part(Role.OUTER, "u", "w"),
                                                                          20.0) == []


def test_a_slide_without_a_piece_url_is_captured_with_its_background_at_once() -> None:
    a = Assembler(window=30, piece_grace=1.5)
    bg_only = AnnouncedChallenge(id="s", mode="slide", kind=Kind.SLIDE,
                                 urls={Role.BACKGROUND: (f"{CDN}/tos/s-bg.jpeg",)}, tip_y=3.0, verify_id="Verify_s")
    a.announce("dev1", [bg_only], 0.0)
    [c] = a.add_announced_image(url_key(f"{CDN}/tos/s-bg.jpeg"), "dev1",
                                part(Role.BACKGROUND, f"{CDN}/tos/s-bg.jpeg", "s"), 0.1)
    assert isinstance(c, Captured) and (c.tip_y, c.verify_id, set(c.images)) == (3.0, "Verify_s", {Role.BACKGROUND})


def test_without_a_grace_a_slide_goes_without_waiting_for_its_piece() -> None:
    a = Assembler(window=30, piece_grace=0)
    ch = announce("s", Kind.SLIDE)
    a.announce("dev1", [ch], 0.0)
    [c] = feed(a, ch, Role.BACKGROUND, 0.1)
    assert isinstance(c, Captured) and set(c.images) == {Role.BACKGROUND}


def test_the_grace_and_the_window_end_exactly_at_their_time() -> None:
    a = Assembler(window=30, piece_grace=1.5)
    slide, whirl = announce("s", Kind.SLIDE), announce("w", Kind.ROTATE)
    a.announce("dev1", [slide], 10.0)
    feed(a, slide, Role.BACKGROUND, 10.0)
    [c] = a.tick(11.5)
    assert isinstance(c, Captured) and c.challenge_id == "s" and a._grace == {}
    a.announce("dev2", [whirl], 20.0)
    feed(a, whirl, Role.OUTER, 20.0, client="dev2")
    assert a.tick(49.99) == []
    [e] = a.tick(50.0)
    assert isinstance(e, Expired) and (e.challenge_id, e.client, e.kind, e.reason) == ("w", "dev2", Kind.ROTATE,
                                                                                        "window")


def test_inline_images_count_as_parts_and_bad_ones_are_skipped() -> None:
    a = Assembler(window=30, piece_grace=1.5)
    bg, piece = png_body((552, 344)), png_body((110, 110))
    broken = AnnouncedChallenge(id="s", mode="slide", kind=Kind.SLIDE,
                                urls={Role.BACKGROUND: (f"{CDN}/tos/s-bg.png",), Role.PIECE: (f"{CDN}/tos/s-p.png",)},
                                inline={Role.PIECE: b"not an image", Role.BACKGROUND: bg})
    # The background came inline: the piece's grace starts at the get.
    assert a.announce("dev1", [broken], 5.0) == []
    [c] = a.tick(6.5)
    assert isinstance(c, Captured) and set(c.images) == {Role.BACKGROUND}
    part_ = c.images[Role.BACKGROUND]
    assert (part_.url, part_.body, part_.info.width, part_.role) == ("inline:s#background", bg, 552, Role.BACKGROUND)
    whole = AnnouncedChallenge(id="t", mode="slide", kind=Kind.SLIDE, urls={Role.BACKGROUND: ("u1",), Role.PIECE: ("u2",)},
                               inline={Role.BACKGROUND: bg, Role.PIECE: piece})
    [c] = a.announce("dev1", [whole], 7.0)
    assert isinstance(c, Captured) and set(c.images) == {Role.BACKGROUND, Role.PIECE}


def test_the_role_of_a_path_is_the_fetching_clients_own() -> None:
    a = Assembler(window=30)
    path = f"{CDN}/tos/shared.png"
    one = AnnouncedChallenge(id="x", mode="whirl", kind=Kind.ROTATE, urls={Role.OUTER: (path,), Role.INNER: ("i1",)})
    two = AnnouncedChallenge(id="y", mode="whirl", kind=Kind.ROTATE, urls={Role.OUTER: ("o2",), Role.INNER: (path,)})
    a.announce("dev1", [one], 0.0)
    a.announce("dev2", [two], 0.0)
    key = url_key(path)
    assert (a.role_of(key, "dev1"), a.role_of(key, "dev2"), a.role_of(key, "stranger")) == (
        Role.OUTER, Role.INNER, Role.INNER)
    assert a.role_of("never-announced", "dev1") is None
    # A client announcing a path again becomes its newest owner.
    a.announce("dev1", [AnnouncedChallenge(id="z", mode="whirl", kind=Kind.ROTATE,
                                           urls={Role.OUTER: (path,), Role.INNER: ("i3",)})], 1.0)
    assert a.role_of(key, "stranger") is Role.OUTER


def test_geometry_parts_replace_their_own_role_and_expire_alone() -> None:
    a = Assembler(window=30)
    first, second = part(Role.OUTER, "u1", "g1"), part(Role.OUTER, "u2", "g2")
    assert a.add_geometry_image("dev1", first, 0.0) == []
    assert a.add_geometry_image("dev1", first, 0.1) == []  # the same picture again: nothing new
    [e] = a.add_geometry_image("dev1", second, 0.2)
    assert isinstance(e, Expired) and (e.client, e.reason, e.kind, e.images) == ("dev1", "replaced", Kind.ROTATE,
                                                                                  {Role.OUTER: first})
    assert e.challenge_id == "geo-" + hashlib.sha256(first.sha256.encode()).hexdigest()[:32]
    assert a.pending_count == 1
    assert a.tick(30.19) == []
    [e] = a.tick(30.2)
    assert isinstance(e, Expired) and (e.reason, e.images) == ("window", {Role.OUTER: second})
    assert a.pending_count == 0 and a._loose == {}
    piece, background = part(Role.PIECE, "p", "g3"), part(Role.BACKGROUND, "b", "g4")
    a.add_geometry_image("dev1", piece, 40.0)
    [e] = a.add_geometry_image("dev1", part(Role.PIECE, "p2", "g5"), 40.1)
    assert isinstance(e, Expired) and e.kind is Kind.SLIDE
    a.flush()
    a.add_geometry_image("dev1", background, 50.0)
    [e] = a.flush()
    assert isinstance(e, Expired) and (e.kind, e.reason) == (None, "shutdown")


def test_a_paired_picture_is_not_paired_again_for_two_windows() -> None:
    a = Assembler(window=10)
    outer, inner = part(Role.OUTER, "o", "g1"), part(Role.INNER, "i", "g1")
    a.add_geometry_image("dev1", outer, 0.0)
    [c] = a.add_geometry_image("dev1", inner, 0.0)
    assert isinstance(c, Captured) and a.pending_count == 0 and a._loose == {}
    ids = sorted(p.sha256 for p in (outer, inner))
    assert c.challenge_id == "geo-" + hashlib.sha256("|".join(ids).encode()).hexdigest()[:32]
    assert a.add_geometry_image("dev1", outer, 19.99) == [] and a.pending_count == 0
    a.add_geometry_image("dev1", outer, 20.0)
    assert a.pending_count == 1
    a.tick(20.0)
    assert a._recent_geometry == {}


def test_flush_ends_everything_still_being_assembled() -> None:
    a = Assembler(window=30)
    started, empty = announce("a", Kind.ROTATE), announce("b", Kind.SLIDE)
    a.announce("dev1", [started], 0.0)
    a.announce("dev2", [empty], 0.0)
    feed(a, started, Role.INNER, 0.1)
    a.add_geometry_image("dev3", part(Role.OUTER, "o", "g"), 0.2)
    out = a.flush()
    assert sorted((o.challenge_id[:4], o.client, o.reason) for o in out if isinstance(o, Expired)) == [
        ("a", "dev1", "shutdown"), ("geo-", "dev3", "shutdown")]
    assert len(out) == 2 and a.pending_count == 0 and a.tick(100) == []


def test_a_path_out_of_scope_for_one_client_is_not_taken_from_another_clients_challenge() -> None:
    a = Assembler(window=30)
    path = f"{CDN}/tos/same.png"
    a.announce("dev1", [AnnouncedChallenge(id="d", mode="3d", kind=None, urls={Role.BACKGROUND: (path,)})], 0.0)
    a.announce("dev2", [AnnouncedChallenge(id="w", mode="whirl", kind=Kind.ROTATE,
                                           urls={Role.OUTER: (path,), Role.INNER: ("i",)})], 0.1)
    assert a.add_announced_image(url_key(path), "dev1", part(Role.OUTER, path, "x"), 0.2) == []
    assert a.role_of(url_key(path), "dev1") is None
    a.add_announced_image(url_key("i"), "dev2", part(Role.INNER, "i", "w"), 0.3)
    [c] = a.add_announced_image(url_key(path), "dev2", part(Role.OUTER, path, "w"), 0.4)
    assert isinstance(c, Captured) and c.images[Role.OUTER].body == b"w:outer"
