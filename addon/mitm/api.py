"""`CaptchaApi`: the proxy answers http(s)://<captcha_host>/ itself (as mitmproxy answers mitm.it), never upstream.

Nothing for captcha_host leaves the machine, in any proxy mode:

- every request for it is answered in `request`; in `requestheaders` its flow gets a fresh server connection
  without `via` (mitmproxy's change_upstream_proxy example does the same to change it) aimed at the sink below,
  so that the two flows that do connect go straight to loopback even in upstream mode: the event stream, which
  `request` re-targets at the loopback stream server, and a request body above stream_large_bodies, which
  mitmproxy streams (connecting before `request`) and the sink refuses;
- a server connection opened eagerly for captcha_host itself (SOCKS5 asks for one before it answers the client)
  goes to a loopback sink that holds it and discards anything sent on it;
- a client connection that tunnels to captcha_host (CONNECT, or TLS with its SNI) opens no other server connection
  than the stream server's: in upstream mode mitmproxy would open it through the upstream proxy.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from mitmproxy import connection, ctx, exceptions, http, tls
from mitmproxy.proxy import server_hooks

from addon.capture.clients import ClientKeyer
from addon.capture.hosts import host_of
from addon.mitm import option_table, options
from addon.publish.event_stream import SECRET_HEADER, EventStreamServer
from addon.publish.http_api import ApiHandler, ApiRequest, ApiResponse
from addon.publish.sink import LoopbackSink

logger = logging.getLogger(__name__)

STREAM_PATH = "/v1/events/stream"
STREAMED = "captcha_stream"


class CaptchaApi:
    def __init__(self, handler: ApiHandler, keyer: ClientKeyer, stream: EventStreamServer):
        self.handler = handler
        self.keyer = keyer
        self.stream = stream
        self.sink = LoopbackSink()
        self.host = "captcha.mitm"
        self._tunnels: set[str] = set()
        """Ids of client connections that tunnel to captcha_host."""

    def load(self, loader: Any) -> None:
        option_table.declare(loader, "api")

    def configure(self, updated: set[str]) -> None:
        options.guard(updated)  # this is the script's first addon: refuse bad values before any other sees them
        if "captcha_host" in updated:
            host = ctx.options.captcha_host.strip().lower()
            if not host or "/" in host or " " in host or ":" in host:
                raise exceptions.OptionsError(f"captcha_host={ctx.options.captcha_host!r}: must be a host name")
            self.host = host
        if "captcha_api_token" in updated:
            self.handler.token = ctx.options.captcha_api_token.encode()

    def _ours(self, host: str | None) -> bool:
        return host is not None and host.lower().rstrip(".") == self.host

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._ours(flow.request.host):
            self._tunnels.add(flow.client_conn.id)
            flow.response = http.Response.make(200)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self._ours(data.client_hello.sni):
            self._tunnels.add(data.context.client.id)
            # TlsConfig (which runs after script addons) would otherwise try the upstream TLS handshake first.
            data.context.server.tls = False
            data.establish_server_tls_first = False

    def tls_established_client(self, data: tls.TlsData) -> None:
        if self._ours(data.conn.sni):
            data.context.server.tls = True

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None or data.server.error or address == self._stream_address():
            return
        if self._ours(str(address[0])):
            if self.sink.address is None:
                data.server.error = f"{self.host} is answered by the proxy itself"
            else:
                data.server.address = self.sink.address
        elif data.client.id in self._tunnels:
            # In upstream mode this is the connection to the upstream proxy, which would be asked for captcha_host.
            data.server.error = f"{self.host} is answered by the proxy itself"

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.discard(client.id)

    def _stream_address(self) -> tuple[str, int] | None:
        return ("127.0.0.1", self.stream.port) if self.stream.port is not None else None

    async def running(self) -> None:
        await self.stream.start()
        await self.sink.start()

    async def done(self) -> None:
        await self.stream.stop()
        await self.sink.stop()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if host_of(flow.request) != self.host or self.sink.address is None:
            return
        # Whatever server connection mitmproxy opens for this flow goes straight to loopback: never `via` the
        # upstream proxy (upstream mode, or an addon's choice), never to the address a transparent client had.
        # It opens one only for the event stream (re-targeted in _to_stream) and for a request body above
        # stream_large_bodies (streamed as it arrives, before the request hook answers): that one reaches the sink.
        # `data` keeps the Host header, which names the API host for the request hook.
        flow.server_conn = connection.Server(address=self.sink.address)
        flow.request.data.host, flow.request.data.port = self.sink.address

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or host_of(flow.request) != self.host:
            return
        request = flow.request
        path, _, query_string = request.path.partition("?")
        if path.rstrip("/") == STREAM_PATH and self.stream.port is not None and request.method == "GET" and (
                self.handler.authorised(request.headers.get("authorization", ""))):
            self._to_stream(flow)
            return
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(query_string).items()}
        api_request = ApiRequest(
            method=request.method, path=path, query=query, client=self.keyer.key(flow),
            authorization=request.headers.get("authorization", ""),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        try:
            answer = await self.handler.handle(api_request)
        except Exception as e:
            logger.exception("captcha: API request %s failed", path[:100])
            answer = ApiResponse.json(500, {"error": f"internal error: {type(e).__name__}"})
        headers = {"Content-Type": answer.content_type, "Cache-Control": "no-store", **answer.headers}
        flow.response = http.Response.make(answer.status, answer.body, headers)
        flow.response.http_version = request.http_version

    def _to_stream(self, flow: http.HTTPFlow) -> None:
        """mitmproxy streams only what a server sends: re-target the request at the loopback event stream."""
        request = flow.request
        self.keyer.key(flow)
        address = ("127.0.0.1", self.stream.port or 0)
        request.scheme, request.host, request.port = "http", *address
        request.http_version = "HTTP/1.1"
        request.headers[SECRET_HEADER] = self.stream.secret
        request.headers.pop("authorization", None)
        flow.metadata[STREAMED] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(STREAMED) and flow.response is not None:
            flow.response.stream = True
