"""The HTTP API's routing, parameters and errors on `ApiHandler` itself, without mitmproxy (the end-to-end tests
hold it through a real proxy)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from addon.publish import events as ev
from addon.publish.board import Board
from addon.publish.bus import EventBus
from addon.publish.gesture import click_plan, drag_path
from addon.publish.http_api import WAIT_MAX, ApiHandler, ApiRequest, ApiResponse, drag_for, plan_for
from addon.solving.base import RotateAnswer, SlideAnswer

TOKEN = "tok-3f9a"


class Api:
    """A handler over a board fed by a bus, with helpers to emit events and call routes."""

    def __init__(self) -> None:
        self.bus = EventBus(run="r1")
        self.board = Board()
        self.bus.subscribe("board", self.board.add)
        self.stats_asked: list[str | None] = []
        self.handler = ApiHandler(self.board, self._stats)

    def _stats(self, client: str | None) -> dict[str, Any]:
        self.stats_asked.append(client)
        return {"for": client}

    def captured(self, client: str, challenge: str, kind: str = "slide") -> ev.Event:
        return self.bus.emit(ev.Captured(client=client, challenge=challenge, kind=kind, images={}, source="get"))

    def solved(self, client: str, challenge: str, kind: str = "slide") -> ev.Event:
        answer = SlideAnswer.from_view(170.0, 552, 340) if kind == "slide" else RotateAnswer.from_angle(180.0)
        return self.bus.emit(ev.Solved(client=client, challenge=challenge, kind=kind, service="omocaptcha-v1",
                                       job_id=7, result="170", answer=answer, elapsed_ms=12))

    def failed(self, client: str, challenge: str) -> ev.Event:
        return self.bus.emit(ev.Failed(client=client, challenge=challenge, kind="rotate", reason="timeout",
                                       message="no final answer"))

    async def get(self, path: str, caller: str = "10.0.0.2", method: str = "GET", authorization: str = "",
                  **query: str) -> ApiResponse:
        return await self.handler.handle(ApiRequest(method, path, dict(query), caller, authorization))


def doc(response: ApiResponse) -> Any:
    assert response.content_type == "application/json"
    return json.loads(response.body)


@pytest.fixture
def api() -> Api:
    return Api()


# --------------------------------------------------------------------------------------------------- routing


async def test_routes_answer_with_their_documents_and_a_trailing_slash_is_the_same_path(api: Api) -> None:
    r = await api.get("/v1/stats")
    assert (r.status, doc(r)) == (200, {"for": None})
    r = await api.get("/v1/stats/")
    assert r.status == 200
    r = await api.get("/v1/events")
    assert (r.status, doc(r)) == (200, {"events": []})


async def test_an_unknown_path_is_404_with_the_endpoints(api: Api) -> None:
    for path in ("/v2/answer", "/", "", "/v1", "/v1/answer/waitx"):
        r = await api.get(path)
        assert (r.status, doc(r)) == (404, {"error": "not found", "endpoints": [
            "/v1/answer", "/v1/answer/wait", "/v1/events", "/v1/stats"]}), path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_only_get_and_head_are_served(api: Api, method: str) -> None:
    r = await api.get("/v1/stats", method=method)
    assert (r.status, doc(r)) == (405, {"error": "only GET is supported"})
    assert api.stats_asked == []
    assert (await api.get("/v1/stats", method="HEAD")).status == 200


async def test_prefix_routes_get_the_rest_of_the_path(api: Api) -> None:
    seen: list[tuple[str, str]] = []

    async def images(request: ApiRequest, rest: str) -> ApiResponse:
        seen.append((request.path, rest))
        return ApiResponse(200, b"png", "image/png")

    api.handler.prefix_routes["/v1/images/"] = images
    r = await api.get("/v1/images/abc/outer.png/")
    assert (r.status, r.body, r.content_type) == (200, b"png", "image/png")
    assert seen == [("/v1/images/abc/outer.png/", "abc/outer.png")]
    # Exact routes win over prefixes, and a path that merely starts like a prefix without its slash is not one.
    assert (await api.get("/v1/images")).status == 404


# --------------------------------------------------------------------------------------------------- the token


async def test_without_a_token_everything_is_open(api: Api) -> None:
    assert api.handler.authorised("") and api.handler.authorised("Bearer anything")
    assert (await api.get("/v1/stats")).status == 200


@pytest.mark.parametrize("authorization", ["", "Bearer wrong", TOKEN, f"bearer {TOKEN}", f"Bearer {TOKEN} ",
                                           f"Bearer  {TOKEN}", f"Bearer {TOKEN[:-1]}", "Bearer é€",
                                           f"Basic {TOKEN}"])
async def test_with_a_token_only_the_exact_bearer_header_passes(api: Api, authorization: str) -> None:
    api.handler.token = TOKEN.encode()
    for path in ("/v1/stats", "/v1/answer", "/nowhere"):
        r = await api.get(path, authorization=authorization)
        assert (r.status, doc(r)) == (401, {"error": "unauthorized"}), path
    # A refused caller learns nothing, not even whether its method would have been served.
    assert (await api.get("/v1/stats", method="POST", authorization=authorization)).status == 401
    assert api.stats_asked == []
    r = await api.get("/v1/stats", authorization=f"Bearer {TOKEN}")
    assert (r.status, doc(r)) == (200, {"for": None})


async def test_public_dashboard_paths_need_no_token_and_nothing_else_opens(api: Api) -> None:
    api.handler.token = TOKEN.encode()

    async def page(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, b"<html>", "text/html")

    async def files(request: ApiRequest, rest: str) -> ApiResponse:
        return ApiResponse(200, rest.encode(), "text/css")

    api.handler.routes["/dashboard"] = page
    api.handler.prefix_routes["/dashboard/static/"] = files
    api.handler.public_paths.add("/dashboard")
    api.handler.public_prefixes.add("/dashboard/static/")
    assert api.handler.public("/dashboard") and api.handler.public("/dashboard/static/app.css")
    assert not api.handler.public("/dashboard/data") and not api.handler.public("/v1/stats")
    r = await api.get("/dashboard/")
    assert (r.status, r.body) == (200, b"<html>")
    r = await api.get("/dashboard/static/app.css")
    assert (r.status, r.body) == (200, b"app.css")
    assert (await api.get("/dashboard", method="POST")).status == 405
    for path in ("/v1/stats", "/v1/events", "/dashboard/data", "/dashboardx"):
        assert (await api.get(path)).status == 401, path


# --------------------------------------------------------------------------------------------------- /v1/answer


async def test_answer_is_the_callers_latest_final_or_404(api: Api) -> None:
    r = await api.get("/v1/answer")
    assert (r.status, doc(r)) == (404, {"error": "no answer yet", "client": "10.0.0.2"})
    api.captured("10.0.0.2", "a")
    api.solved("10.0.0.2", "a")
    api.captured("10.0.0.3", "b")
    api.failed("10.0.0.3", "b")
    r = await api.get("/v1/answer")
    assert r.status == 200 and (doc(r)["challenge"], doc(r)["event"], doc(r)["seq"]) == ("a", "solved", 2)
    assert "drag" not in doc(r)
    # ?client= asks for another client (a fleet controller); without it the caller's own key counts.
    r = await api.get("/v1/answer", caller="10.0.0.9", client="10.0.0.3")
    assert (doc(r)["challenge"], doc(r)["event"], doc(r)["reason"]) == ("b", "failed", "timeout")
    r = await api.get("/v1/answer", caller="10.0.0.3", client="")
    assert doc(r)["challenge"] == "b"


async def test_answer_converts_the_drag_to_the_callers_geometry(api: Api) -> None:
    api.captured("c", "s1")
    solved = api.solved("c", "s1")
    r = await api.get("/v1/answer", caller="c", width="276")
    assert doc(r) == {**solved.to_json(), "drag": {"x": pytest.approx(138.0), "width": 276.0}}
    api.captured("c", "w1", "rotate")
    api.solved("c", "w1", "rotate")
    r = await api.get("/v1/answer", caller="c", track="340", handle="69")
    assert doc(r)["drag"] == {"x": 135.5, "travel": 271.0, "angle": 180.0}
    r = await api.get("/v1/answer", caller="c", track="271")
    assert doc(r)["drag"] == {"x": 135.5, "travel": 271.0, "angle": 180.0}
    for bad in ({"track": "x"}, {"track": "69", "handle": "69"}, {"track": "340", "handle": "-1"},
                {"track": "inf"}, {"width": "340"}):
        assert "drag" not in doc(await api.get("/v1/answer", caller="c", **bad)), bad


async def test_answers_carry_text_that_is_no_ascii_and_keys_that_are_no_unicode(api: Api) -> None:
    for client in ("téléphone-7", "bad-\udcff-key"):
        api.captured(client, "x-" + client)
        api.solved(client, "x-" + client)
        r = await api.get("/v1/answer", caller=client)
        assert r.status == 200 and r.body.decode("utf-8")  # valid UTF-8 whatever the key holds
        assert doc(r)["client"] == client
    assert "téléphone-7".encode() in (await api.get("/v1/answer", caller="téléphone-7")).body


# --------------------------------------------------------------------------------------------------- /v1/answer/wait


class Waits:
    """Counts the handler's waits on the board, and lets a test act when one starts."""

    def __init__(self, board: Board):
        self.timeouts: list[float] = []
        self.started = asyncio.Event()
        self._wait = board.wait_change
        board.wait_change = self  # type: ignore[method-assign]

    async def __call__(self, client: str, timeout: float) -> None:
        self.timeouts.append(timeout)
        self.started.set()
        await self._wait(client, timeout)


async def test_wait_returns_at_once_when_the_newest_challenge_is_final(api: Api) -> None:
    waits = Waits(api.board)
    api.captured("c", "a")
    api.solved("c", "a")
    r = await api.get("/v1/answer/wait", caller="c")
    assert (r.status, doc(r)["challenge"]) == (200, "a")
    assert waits.timeouts == []


async def test_wait_follows_the_newest_captured_challenge_until_its_final(api: Api) -> None:
    waits = Waits(api.board)
    api.captured("c", "old")
    api.solved("c", "old")
    api.captured("c", "new")
    task = asyncio.create_task(api.get("/v1/answer/wait", caller="c", timeout="30", width="552"))
    await waits.started.wait()
    assert waits.timeouts[0] == pytest.approx(30, abs=1)
    waits.started.clear()
    api.captured("d", "other")
    api.solved("d", "other")
    api.solved("c", "unrelated")  # a final of a challenge that is not the newest captured one
    await waits.started.wait()
    assert not task.done()
    api.failed("c", "new")
    r = await task
    assert (r.status, doc(r)["challenge"], doc(r)["event"]) == (200, "new", "failed")
    assert "drag" not in doc(r)


async def test_wait_answers_204_when_the_timeout_passes(api: Api) -> None:
    api.captured("c", "a")
    start = time.monotonic()
    r = await api.get("/v1/answer/wait", caller="c", timeout="0.05")
    assert (r.status, r.body) == (204, b"") and time.monotonic() - start >= 0.05
    waits = Waits(api.board)
    r = await api.get("/v1/answer/wait", caller="c", timeout="0")
    assert r.status == 204 and waits.timeouts == []


async def test_wait_is_bounded_by_its_maximum(api: Api) -> None:
    waits = Waits(api.board)
    task = asyncio.create_task(api.get("/v1/answer/wait", caller="c", timeout="100000"))
    await waits.started.wait()
    assert WAIT_MAX - 1 < waits.timeouts[0] <= WAIT_MAX
    api.captured("c", "a")
    api.solved("c", "a")
    assert (await task).status == 200


async def test_wait_defaults_to_thirty_seconds(api: Api) -> None:
    waits = Waits(api.board)
    task = asyncio.create_task(api.get("/v1/answer/wait", caller="c"))
    await waits.started.wait()
    assert 29 < waits.timeouts[0] <= 30
    api.captured("c", "a")
    api.solved("c", "a")
    assert doc(await task)["challenge"] == "a"


async def test_wait_walks_a_clients_finals_with_after(api: Api) -> None:
    for n in range(3):
        api.captured("c", f"c{n}")
        api.captured("other", f"o{n}")
        api.solved("c", f"c{n}")
        api.solved("other", f"o{n}")
    walked, after = [], -5
    while True:
        r = await api.get("/v1/answer/wait", caller="c", after=str(after), timeout="0")
        if r.status == 204:
            break
        walked.append(doc(r)["challenge"])
        after = doc(r)["seq"]
    assert walked == ["c0", "c1", "c2"]
    # A final that comes while waiting past the last one is handed over as it comes.
    waits = Waits(api.board)
    task = asyncio.create_task(api.get("/v1/answer/wait", caller="c", after=str(after), timeout="30"))
    await waits.started.wait()
    api.captured("c", "c3")
    api.solved("c", "c3", kind="rotate")
    r = await task
    assert (doc(r)["challenge"], doc(r)["seq"]) == ("c3", after + 3)
    # ?client= walks another client's finals.
    r = await api.get("/v1/answer/wait", caller="me", after="0", timeout="0", client="other")
    assert doc(r)["challenge"] == "o0"


@pytest.mark.parametrize("query", [{"timeout": "-1"}, {"timeout": "x"}, {"timeout": "nan"}, {"timeout": "inf"},
                                   {"after": "x"}, {"after": "1.5"}, {"after": ""}])
async def test_wait_refuses_bad_parameters(api: Api, query: dict[str, str]) -> None:
    r = await api.get("/v1/answer/wait", **query)
    assert (r.status, doc(r)) == (400, {"error": "timeout must be a non-negative number and after an integer"})


# --------------------------------------------------------------------------------------------------- /v1/events, /v1/stats


async def test_events_newest_first_limited_and_per_client(api: Api) -> None:
    for n in range(60):
        api.captured(f"c{n % 2}", f"x{n}")
    r = await api.get("/v1/events")
    seqs = [e["seq"] for e in doc(r)["events"]]
    assert seqs == list(range(60, 10, -1))
    assert [e["seq"] for e in doc(await api.get("/v1/events", limit="3"))["events"]] == [60, 59, 58]
    mine = doc(await api.get("/v1/events", caller="me", limit="100", client="c1"))["events"]
    assert [e["seq"] for e in mine] == list(range(60, 0, -2)) and {e["client"] for e in mine} == {"c1"}
    # Without ?client= every client's events are listed, not only the caller's.
    assert len(doc(await api.get("/v1/events", caller="c1", limit="100"))["events"]) == 60


async def test_events_with_limit_zero_are_allowed(api: Api) -> None:
    assert (await api.get("/v1/events", limit="0")).status == 200


async def test_events_with_limit_zero_are_none(api: Api) -> None:
    api.captured("c", "x")
    assert doc(await api.get("/v1/events", limit="0")) == {"events": []}


@pytest.mark.parametrize("limit", ["-1", "x", "2.0", ""])
async def test_events_refuse_a_bad_limit(api: Api, limit: str) -> None:
    r = await api.get("/v1/events", limit=limit)
    assert (r.status, doc(r)) == (400, {"error": "limit must be a non-negative integer"})


async def test_stats_of_the_proxy_or_of_one_client(api: Api) -> None:
    assert doc(await api.get("/v1/stats", caller="me")) == {"for": None}
    assert doc(await api.get("/v1/stats", caller="me", client="c7")) == {"for": "c7"}
    assert api.stats_asked == [None, "c7"]


def test_json_responses() -> None:
    assert ApiResponse.json(204, None) == ApiResponse(204, b"", "application/json")
    assert ApiResponse.json(200, {"a": "é"}).body == '{"a": "é"}'.encode()


# --------------------------------------------------------------------------------------------------- odd requests


async def test_paths_are_compared_exactly_after_trailing_slashes(api: Api) -> None:
    async def index(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, b"index", "text/plain")

    api.handler.routes["/"] = index
    for path in ("", "/", "///"):
        assert (await api.get(path)).body == b"index", path
    for path in ("/v1/statsX", "/v1/stats/X", "/V1/stats", "X/v1/stats"):
        assert (await api.get(path)).status == 404, path


async def test_an_authorization_header_that_is_no_unicode_is_refused_not_crashed(api: Api) -> None:
    api.handler.token = TOKEN.encode()
    r = await api.get("/v1/stats", authorization=f"Bearer {TOKEN}\udcff")
    assert r.status == 401
    assert not api.handler.authorised("Bearer \udcff") and api.handler.authorised(f"Bearer {TOKEN}")


async def test_after_below_zero_walks_from_the_very_first_event(api: Api) -> None:
    api.solved("c", "first")  # seq 1: no captured before it
    r = await api.get("/v1/answer/wait", caller="c", after="-1", timeout="0")
    assert (doc(r)["challenge"], doc(r)["seq"]) == ("first", 1)
    assert (await api.get("/v1/answer/wait", caller="c", after="1", timeout="0")).status == 204


def test_drag_needs_a_solved_event_with_an_answer() -> None:
    assert drag_for({"event": "failed", "kind": "slide", "answer": {"x": 1, "fraction": 0.5}}, {"width": "300"}) is None
    assert drag_for({"event": "solved", "kind": "slide", "answer": None}, {"width": "300"}) is None
    assert drag_for({"event": "solved", "kind": "slide", "answer": {"fraction": 0.5}}, {"width": "0"}) == {
        "x": 0.0, "width": 0.0}
    assert drag_for({"event": "solved", "kind": "rotate", "answer": {"fraction": 0.5}}, {"track": "10"}) == {
        "x": 5.0, "travel": 10.0, "angle": 180.0}
    assert drag_for({"event": "solved", "kind": "rotate", "answer": {"fraction": 0.5}}, {"width": "10"}) is None
    assert drag_for({"event": "solved", "kind": "slide", "answer": {"fraction": 0.5}}, {"track": "10"}) is None


# --------------------------------------------------------------------------------------------------- fleet mode


class Fleet:
    """A stand-in for the fleet's reader (addon/fleet/reader.py): answers of other proxies' clients."""

    def __init__(self) -> None:
        self.finals: dict[str, list[dict[str, Any]]] = {}
        self.down = False
        self.calls: list[tuple[Any, ...]] = []

    def _check(self, *call: Any) -> None:
        self.calls.append(call)
        if self.down:
            from addon.publish.remote import AnswersUnreachable

            raise AnswersUnreachable("gone")

    async def latest_final(self, client: str) -> dict[str, Any] | None:
        self._check("latest_final", client)
        return (self.finals.get(client) or [None])[-1]

    async def wait_final(self, client: str, timeout: float, after: Any = None) -> dict[str, Any] | None:
        self._check("wait_final", client, timeout, after)
        return (self.finals.get(client) or [None])[-1]

    async def newest_events(self, limit: int = 50, client: str | None = None) -> list[dict[str, Any]]:
        self._check("newest_events", limit, client)
        return list(reversed(self.finals.get(client or "", [])))[:limit]

    async def fleet_stats(self) -> dict[str, Any]:
        self._check("fleet_stats")
        return {"proxies": 3}


@pytest.fixture
def fleet(api: Api) -> Fleet:
    f = Fleet()
    api.handler.fleet = f  # type: ignore[assignment]
    return f


SOLVED_ELSEWHERE = {"seq": 9, "run": "other", "event": "solved", "client": "phone-9", "challenge": "z", "kind": "slide",
                    "answer": {"x": 170, "width_view": 340, "fraction": 0.5, "x_natural": 276}}


async def test_another_proxys_client_is_answered_from_the_fleet(api: Api, fleet: Fleet) -> None:
    fleet.finals["phone-9"] = [SOLVED_ELSEWHERE]
    r = await api.get("/v1/answer", client="phone-9", width="276")
    assert (r.status, doc(r)) == (200, {**SOLVED_ELSEWHERE, "drag": {"x": 138.0, "width": 276.0}})
    r = await api.get("/v1/answer", client="phone-8")
    assert (r.status, doc(r)) == (404, {"error": "no answer yet", "client": "phone-8"})
    r = await api.get("/v1/answer/wait", client="phone-9", timeout="5", after="1700000000000-0", width="276")
    assert (r.status, doc(r)["drag"]) == (200, {"x": 138.0, "width": 276.0})
    assert (await api.get("/v1/answer/wait", client="phone-8", timeout="0")).status == 204
    r = await api.get("/v1/events", client="phone-9", limit="5")
    assert (r.status, doc(r)) == (200, {"events": [SOLVED_ELSEWHERE]})
    assert fleet.calls == [("latest_final", "phone-9"), ("latest_final", "phone-8"),
                           ("wait_final", "phone-9", 5.0, "1700000000000-0"), ("wait_final", "phone-8", 0.0, None),
                           ("newest_events", 5, "phone-9")]


async def test_the_fleet_wait_takes_a_seq_or_a_stream_id_and_is_bounded(api: Api, fleet: Fleet) -> None:
    for after, cursor in (("12", 12), ("-1", -1), ("1700000000000-3", "1700000000000-3")):
        await api.get("/v1/answer/wait", client="phone-9", timeout="1000", after=after)
        assert fleet.calls[-1] == ("wait_final", "phone-9", WAIT_MAX, cursor)
    await api.get("/v1/answer/wait", client="phone-9")
    assert fleet.calls[-1] == ("wait_final", "phone-9", 30.0, None)
    for bad in ({"after": "17-x"}, {"after": "x"}, {"timeout": "-1"}):
        r = await api.get("/v1/answer/wait", client="phone-9", **bad)
        assert (r.status, doc(r)) == (400, {"error": "timeout must be a non-negative number and after an integer "
                                                     "or a stream id"}), bad
    assert len(fleet.calls) == 4


async def test_this_proxys_own_clients_never_go_to_the_fleet(api: Api, fleet: Fleet) -> None:
    api.captured("10.0.0.2", "mine")
    api.solved("10.0.0.2", "mine")
    assert doc(await api.get("/v1/answer"))["challenge"] == "mine"
    assert doc(await api.get("/v1/answer/wait", timeout="0"))["challenge"] == "mine"
    assert len(doc(await api.get("/v1/events", client="10.0.0.2"))["events"]) == 2
    assert len(doc(await api.get("/v1/events"))["events"]) == 2  # no ?client=: this proxy's own events
    assert fleet.calls == []


async def test_fleet_stats_and_a_fleet_that_does_not_answer(api: Api, fleet: Fleet) -> None:
    r = await api.get("/v1/stats", scope="fleet")
    assert (r.status, doc(r)) == (200, {"proxies": 3})
    assert doc(await api.get("/v1/stats", scope="proxy")) == {"for": None}
    fleet.down = True
    down = {"error": "the fleet's Redis did not answer; this proxy still answers for its own clients"}
    for path, query in (("/v1/answer", {"client": "p"}), ("/v1/answer/wait", {"client": "p"}),
                        ("/v1/events", {"client": "p"}), ("/v1/stats", {"scope": "fleet"})):
        r = await api.get(path, **query)
        expected = {**down, "client": "p"} if "client" in query else down
        assert (r.status, doc(r), r.headers) == (503, expected, {"Retry-After": "1"}), path


async def test_fleet_stats_need_fleet_mode(api: Api) -> None:
    r = await api.get("/v1/stats", scope="fleet")
    assert (r.status, doc(r)) == (400, {"error": "scope=fleet needs fleet mode (captcha_redis)"})
    assert api.stats_asked == []


async def test_an_empty_client_parameter_lists_this_proxys_events(api: Api, fleet: Fleet) -> None:
    api.captured("", "x")
    r = await api.get("/v1/events", client="")
    assert len(doc(r)["events"]) == 1 and fleet.calls == []


async def test_plan_adds_a_seeded_path_beside_the_drag(api: Api) -> None:
    api.captured("c", "w1", "rotate")
    api.solved("c", "w1", "rotate")
    r = doc(await api.get("/v1/answer", caller="c", track="340", handle="69", plan="1"))
    assert r["drag"] == {"x": 135.5, "travel": 271.0, "angle": 180.0}
    assert r["path"][0] == [0, 0.0, 0.0] and r["path"][-1][1] == 135.5
    assert r["path"] == drag_path(135.5, "w1")
    again = doc(await api.get("/v1/answer/wait", caller="c", track="340", handle="69", plan="true"))
    assert again["path"] == r["path"]
    api.captured("c", "s1")
    api.solved("c", "s1")
    r = doc(await api.get("/v1/answer", caller="c", width="276", plan="1"))
    assert r["path"][-1][1] == pytest.approx(138.0) and r["path"] == drag_path(r["drag"]["x"], "s1")
    # No plan without plan=1, nor without the geometry that gives the drag.
    assert "path" not in doc(await api.get("/v1/answer", caller="c", width="276"))
    assert "path" not in doc(await api.get("/v1/answer", caller="c", width="276", plan="0"))
    assert "path" not in doc(await api.get("/v1/answer", caller="c", plan="1"))


def test_plan_for_points_gives_clicks() -> None:
    drag = {"points": [{"x": 10.0, "y": 20.0}, {"x": 30.0, "y": 40.0}], "width": 340.0}
    assert plan_for({"challenge": "p1"}, drag) == {"clicks": click_plan([(10.0, 20.0), (30.0, 40.0)], "p1")}
    assert plan_for({"challenge": "p1"}, {"width": 340.0}) == {}
