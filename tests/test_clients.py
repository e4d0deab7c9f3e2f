"""The client keyer on its own: addresses, device headers remembered per connection, proxy user names, and the key
kept in the flow's metadata so every stage agrees on who a request belongs to."""

from __future__ import annotations

from typing import Any

import pytest
from mitmproxy import connection, exceptions
from mitmproxy.test import tflow, tutils

from addon.capture.clients import METADATA_KEY, ClientKeyer, address_of, parse_spec
from addon.mitm.capture import CaptchaCapture
from addon.publish.bus import EventBus
from addon.solving.scheduler import Scheduler

HEADER = "X-Device-Id"


def conn(ip: str = "10.0.0.2", port: int = 40000) -> connection.Client:
    return connection.Client(peername=(ip, port), sockname=("127.0.0.1", 8080), timestamp_start=1.0)


def flow(client: connection.Client, device: str | None = None, **headers: str) -> Any:
    f = tflow.tflow(client_conn=client)
    f.request = tutils.treq(headers=tuple((k.encode(), v.encode()) for k, v in headers.items()))
    if device is not None:
        f.request.headers[HEADER] = device
    return f


def test_by_address() -> None:
    keyer = ClientKeyer()
    assert keyer.key(flow(conn("10.0.0.2"))) == "10.0.0.2"
    assert keyer.key(flow(conn("::ffff:10.0.0.3"))) == "10.0.0.3"
    assert keyer.key(flow(conn("2001:db8::7"))) == "2001:db8::7"
    # A device header counts for nothing unless the keyer is told to use it.
    assert keyer.key(flow(conn("10.0.0.4"), "phone-1")) == "10.0.0.4"


def test_without_a_peer_the_client_is_unknown() -> None:
    f = flow(conn())
    f.client_conn.peername = None
    assert address_of(f) == "unknown" and ClientKeyer().key(f) == "unknown"


def test_the_key_is_worked_out_once_and_kept_in_the_flow() -> None:
    keyer = ClientKeyer(f"header:{HEADER}")
    f = flow(conn(), "phone-1")
    assert keyer.key(f) == "phone-1" and f.metadata[METADATA_KEY] == "phone-1"
    f.request.headers[HEADER] = "phone-2"
    assert keyer.key(f) == "phone-1"
    # A key another part of mitmproxy set first is taken as it is; anything but a string is worked out again.
    other = flow(conn(), "phone-3")
    other.metadata[METADATA_KEY] = "given"
    assert keyer.key(other) == "given"
    odd = flow(conn(), "phone-4")
    odd.metadata[METADATA_KEY] = ("not", "a", "string")
    assert keyer.key(odd) == "phone-4" and odd.metadata[METADATA_KEY] == "phone-4"


def test_a_request_without_the_header_belongs_to_the_device_whose_header_last_came_over_its_connection() -> None:
    keyer = ClientKeyer(f"header:{HEADER}")
    one, two = conn("10.0.0.2", 40001), conn("10.0.0.2", 40002)
    # Two devices behind one address, interleaved, each on a connection of its own.
    assert keyer.key(flow(one, "phone-A")) == "phone-A"
    assert keyer.key(flow(two, "phone-B")) == "phone-B"
    assert keyer.key(flow(one)) == "phone-A"
    assert keyer.key(flow(two)) == "phone-B"
    # The newest header on a connection wins; an empty header is no header.
    assert keyer.key(flow(one, "phone-C")) == "phone-C"
    assert keyer.key(flow(one)) == "phone-C"
    assert keyer.key(flow(one, "")) == "phone-C"
    assert keyer.key(flow(two, **{HEADER.lower(): "phone-D"})) == "phone-D"  # header names are case-insensitive
    assert keyer.key(flow(two)) == "phone-D"
    # A connection that never carried the header falls back to the address.
    assert keyer.key(flow(conn("10.0.0.9", 40003))) == "10.0.0.9"


def test_a_closed_connection_is_forgotten() -> None:
    keyer = ClientKeyer(f"header:{HEADER}")
    one, two = conn("10.0.0.2", 40001), conn("10.0.0.3", 40002)
    keyer.key(flow(one, "phone-A"))
    keyer.key(flow(two, "phone-B"))
    keyer.forget_connection(one.id)
    keyer.forget_connection("never-seen")
    assert keyer.key(flow(one)) == "10.0.0.2"
    assert keyer.key(flow(two)) == "phone-B"


def test_configuring_again_forgets_every_connection() -> None:
    keyer = ClientKeyer(f"header:{HEADER}")
    one = conn()
    keyer.key(flow(one, "phone-A"))
    keyer.configure("header:X-Other")
    assert (keyer.mode, keyer.header) == ("header", "X-Other")
    assert keyer.key(flow(one)) == "10.0.0.2"
    assert keyer.key(flow(one, "phone-A", **{"X-Other": "phone-Z"})) == "phone-Z"
    keyer.configure("ip")
    assert keyer.key(flow(one, **{"X-Other": "phone-Z"})) == "10.0.0.2"


def test_the_capture_addon_forgets_a_connection_when_its_client_goes() -> None:
    keyer = ClientKeyer(f"header:{HEADER}")
    bus = EventBus()
    capture = CaptchaCapture(bus, Scheduler(bus), keyer)
    one = conn()
    keyer.key(flow(one, "phone-A"))
    assert keyer.key(flow(one)) == "phone-A"
    capture.client_disconnected(one)
    assert keyer.key(flow(one)) == "10.0.0.2"


def test_header_bytes_that_are_no_utf8_become_replacement_characters() -> None:
    keyer = ClientKeyer(f"header:{HEADER}")
    f = flow(conn())
    f.request.headers.fields = ((HEADER.encode(), b"ph\xffone"),)
    key = keyer.key(f)
    assert key == "ph\ufffdone" and key.encode("utf-8")
    assert keyer.key(flow(f.client_conn)) == "ph\ufffdone"


def test_by_proxy_user_name() -> None:
    keyer = ClientKeyer("proxyauth")
    cases: list[tuple[Any, str]] = [
        (("phone-3", "pw"), "phone-3"), (["phone-4", "pw"], "phone-4"), (("", "pw"), "10.0.0.2"), ((), "10.0.0.2"),
        ((7, "pw"), "10.0.0.2"), ("phone-5", "10.0.0.2"), (None, "10.0.0.2"),
    ]
    for auth, expected in cases:
        f = flow(conn(), "header-ignored")
        if auth is not None:
            f.metadata["proxyauth"] = auth
        assert keyer.key(f) == expected, auth


@pytest.mark.parametrize(("spec", "parsed"), [
    ("ip", ("ip", "")), ("proxyauth", ("proxyauth", "")), ("header:X-Device-Id", ("header", "X-Device-Id")),
    ("header: X-Id ", ("header", "X-Id")),
])
def test_specs(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_spec(spec) == parsed
    assert (ClientKeyer(spec).mode, ClientKeyer(spec).header) == parsed


@pytest.mark.parametrize("spec", ["", "mac", "header:", "header:  ", "IP", "headers:X", "proxyauth:x"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(exceptions.OptionsError, match="captcha_client_key must be"):
        parse_spec(spec)
