"""Telling clients apart: by address, by a request header such as a device id, or by proxy user name."""

from __future__ import annotations

from mitmproxy import exceptions, http

METADATA_KEY = "captcha_client"
"""Where a flow's client key is kept once worked out (mitmproxy's idiom: its proxyauth addon does the same)."""


class ClientKeyer:
    def __init__(self, spec: str = "ip"):
        self.mode, self.header = parse_spec(spec)
        self._by_connection: dict[str, str] = {}

    def configure(self, spec: str) -> None:
        self.mode, self.header = parse_spec(spec)
        self._by_connection.clear()

    def key(self, flow: http.HTTPFlow) -> str:
        """The flow's client key, worked out once per flow and kept in `flow.metadata`."""
        known = flow.metadata.get(METADATA_KEY)
        if isinstance(known, str):
            return known
        key = self._work_out(flow)
        flow.metadata[METADATA_KEY] = key
        return key

    def _work_out(self, flow: http.HTTPFlow) -> str:
        if self.mode == "header":
            value: str | None = flow.request.headers.get(self.header)
            conn = flow.client_conn.id
            if value:
                # mitmproxy keeps undecodable header bytes as surrogates, which no UTF-8 output could carry.
                value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                self._by_connection[conn] = value
                return value
            # Image fetches often lack the device header; the connection that carried it still names the device.
            remembered = self._by_connection.get(conn)
            if remembered is not None:
                return remembered
        elif self.mode == "proxyauth":
            auth = flow.metadata.get("proxyauth")
            if isinstance(auth, tuple | list) and auth and isinstance(auth[0], str) and auth[0]:
                return auth[0]
        return address_of(flow)

    def forget_connection(self, connection_id: str) -> None:
        self._by_connection.pop(connection_id, None)


def address_of(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    host = str(peer[0]) if peer else "unknown"
    return host.removeprefix("::ffff:")


def parse_spec(spec: str) -> tuple[str, str]:
    if spec in ("ip", "proxyauth"):
        return spec, ""
    if spec.startswith("header:") and spec[len("header:") :].strip():
        return "header", spec[len("header:") :].strip()
    raise exceptions.OptionsError(
        f"captcha_client_key must be 'ip', 'header:NAME' or 'proxyauth', not {spec!r}"
    )
