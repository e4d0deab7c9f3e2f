"""The dashboard's routes on `ApiHandler`, without mitmproxy: a challenge's files by query and by path (whatever
its id holds), and the favicon (the end-to-end test holds them in Chromium through a real proxy)."""

from __future__ import annotations

import pytest

from addon.publish.board import Board
from addon.publish.dashboard_api import Dashboard
from addon.publish.http_api import ApiHandler, ApiRequest, ApiResponse
from addon.publish.tally import Tally

IDS = ["..", ".", "a/../b?c=1&role=x#f %2e%2E+/", "é€", "images", "answer.png"]


@pytest.fixture
def handler() -> ApiHandler:
    handler = ApiHandler(Board(), lambda client: {})
    dashboard = Dashboard(Tally(), in_flight=lambda: 0, waiting=lambda: 0, balance=lambda: {})
    for challenge in IDS:
        dashboard.images.put(challenge, "outer", f"outer of {challenge}".encode(), "png")
    dashboard.register(handler)
    return handler


async def get(handler: ApiHandler, path: str, **query: str) -> ApiResponse:
    return await handler.handle(ApiRequest("GET", path, query, "10.0.0.2"))


@pytest.mark.parametrize("challenge", IDS)
async def test_an_image_by_query_is_found_whatever_its_id_holds(handler: ApiHandler, challenge: str) -> None:
    r = await get(handler, "/v1/challenges/images", challenge=challenge, role="outer")
    assert (r.status, r.body, r.content_type) == (200, f"outer of {challenge}".encode(), "image/png")
    assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_path_urls_still_serve_percent_encoded_ids(handler: ApiHandler) -> None:
    r = await get(handler, "/v1/challenges/a%2F..%2Fb%3Fc%3D1%26role%3Dx%23f%20%252e%252E%2B%2F/images/outer")
    assert (r.status, r.body) == (200, b"outer of a/../b?c=1&role=x#f %2e%2E+/")
    r = await get(handler, "/v1/challenges/images/images/outer")
    assert (r.status, r.body) == (200, b"outer of images")


async def test_a_file_not_kept_is_the_placeholder_and_a_missing_parameter_a_400(handler: ApiHandler) -> None:
    for path, query in (("/v1/challenges/images", {"challenge": "..", "role": "inner"}),
                        ("/v1/challenges/images", {"challenge": "gone", "role": "outer"}),
                        ("/v1/challenges/answer.png", {"challenge": ".."}),
                        ("/v1/challenges/answer.png", {"challenge": "gone"})):
        r = await get(handler, path, **query)
        assert (r.status, r.content_type, r.body[:8]) == (404, "image/png", b"\x89PNG\r\n\x1a\n"), (path, query)
    for path, query in (("/v1/challenges/images", {"challenge": ".."}), ("/v1/challenges/images", {"role": "outer"}),
                        ("/v1/challenges/answer.png", {})):
        r = await get(handler, path, **query)
        assert (r.status, r.content_type) == (400, "application/json"), (path, query)


async def test_the_favicon_is_served_without_the_token(handler: ApiHandler) -> None:
    handler.token = b"tok"
    for path in ("/favicon.ico", "/dashboard/favicon.svg"):
        r = await get(handler, path)
        assert (r.status, r.content_type) == (200, "image/svg+xml") and r.body.startswith(b"<svg"), path
    assert (await get(handler, "/v1/challenges/images", challenge="..", role="outer")).status == 401
