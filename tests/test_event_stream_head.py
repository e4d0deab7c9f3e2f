"""The event stream server's request head, read by h11."""

from __future__ import annotations

import h11
import pytest

from addon.publish.event_stream import _parse_head


def test_target_and_headers_with_names_lower_cased() -> None:
    target, headers = _parse_head(b"GET /v1/events?client=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n")
    assert (target, headers["last-event-id"], headers["host"]) == ("/v1/events?client=a", "7", "x")


@pytest.mark.parametrize("head", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"])
def test_a_malformed_head_is_refused(head: bytes) -> None:
    with pytest.raises((h11.RemoteProtocolError, ConnectionError)):
        _parse_head(head)
