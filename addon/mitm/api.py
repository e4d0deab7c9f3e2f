"""`CaptchaApi`: the proxy answers http(s)://<captcha_host>/ itself (as mitmproxy answers mitm.it), never upstream."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.proxy import server_hooks

from addon.capture.clients import ClientKeyer
from addon.capture.hosts import host_of
from addon.mitm import option_table, options
from addon.publish.event_stream import SECRET_HEADER, EventStreamServer
from addon.publish.http_api import ApiHandler, ApiRequest, ApiResponse

logger = logging.getLogger(__name__)

STREAM_PATH = "/v1/events/stream"
STREAMED = "captcha_stream"


class CaptchaApi:
    def __init__(self, handler: ApiHandler, keyer: ClientKeyer, stream: EventStreamServer):
        self.handler = handler
        self.keyer = keyer
        self.stream = stream
        self.host = "captcha.mitm"

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
            flow.response = http.Response.make(200)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self._ours(data.client_hello.sni):
            # TlsConfig (which runs after script addons) would otherwise try the upstream TLS handshake first.
            data.context.server.tls = False
            data.establish_server_tls_first = False

    def tls_established_client(self, data: tls.TlsData) -> None:
        if self._ours(data.conn.sni):
            data.context.server.tls = True

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is not None and self._ours(str(address[0])):
            data.server.error = f"{self.host} is answered by the proxy itself"

    async def running(self) -> None:
        await self.stream.start()

    async def done(self) -> None:
        await self.stream.stop()

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
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.stream.port or 0
        request.http_version = "HTTP/1.1"
        request.headers[SECRET_HEADER] = self.stream.secret
        request.headers.pop("authorization", None)
        flow.metadata[STREAMED] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(STREAMED) and flow.response is not None:
            flow.response.stream = True
