"""Test-only mitmproxy script: send every upstream connection to the local test origin.

Load it beside the addon::

    mitmdump -s addon/main.py -s tests/kit/redirect.py --set testkit_origin=127.0.0.1:8080,8443

Clients keep using the real host names (``https://verification-va.tiktok.com/...``); this script only changes
where mitmproxy's TCP connection goes:

- ``server_connect``: the connection's address becomes the origin's HTTPS port when the connection will carry
  TLS (``server.tls`` is already set, or the original port is 443; inside a CONNECT tunnel mitmproxy opens the
  connection eagerly, before it knows about TLS, so the port is what tells) and the origin's HTTP port when the
  original port is 80. SNI and the Host header/authority keep the real name, because mitmproxy takes them from
  the client (``client.sni``) and from the request, not from the address.
- ``server_connected``: the real address is put back (around mitmproxy's guard against changing the address of
  an open connection; ``server.peername`` still shows where the connection really went). Inside a CONNECT tunnel
  mitmproxy gives each request the host of the server connection's address, and matches connections for reuse
  by address, so without this every HTTPS flow would read ``127.0.0.1`` and plain HTTP connections would not be
  reused.

Nothing ever leaves loopback. A connection is refused (``data.server.error`` is set, which kills it before any
DNS look-up or connect) when:

- its host is one the proxy answers itself (``captcha.mitm`` or the addon's ``captcha_host``, ``mitm.it``, and
  whatever ``testkit_local_hosts`` lists);
- ``testkit_origin`` is empty or its port is neither 80 nor 443 (and the connection is not known to be TLS).

Connections whose address already is a loopback IP address (``127.0.0.0/8``, ``::1``) or ``localhost`` are passed
on unchanged, so a test may still talk to another local service through the proxy.

Upstream mode (``--mode upstream:http://127.0.0.1:PORT``, the recording upstream of ``tests/kit/upstream.py``):
mitmproxy opens the connection to the upstream proxy itself, so that is the address seen here, and a loopback one
passes unchanged (the upstream maps hosts to the origin itself); an upstream anywhere else is refused or, on port
80/443, mapped to the origin like any host. A connection that still carries ``via`` is refused unless its proxy is
on loopback.

This file is loaded by mitmproxy's script loader as a standalone module: it imports nothing from the project.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

logger = logging.getLogger(__name__)

Address = tuple[str, int]

DEFAULT_LOCAL_HOSTS = ("captcha.mitm", "mitm.it")


def parse_origin(spec: str) -> tuple[str, int, int] | None:
    """Parse ``"HOST:HTTP_PORT,HTTPS_PORT"`` (the second part may also be ``HOST:PORT``).

    Returns ``None`` for an empty spec; raises ``ValueError`` for anything else that is not a loopback origin.
    """
    spec = spec.strip()
    if not spec:
        return None
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2:
        raise ValueError(f"expected 'HOST:HTTP_PORT,HTTPS_PORT', got {spec!r}")
    host, sep, http_port_s = parts[0].rpartition(":")
    if not sep:
        raise ValueError(f"expected 'HOST:HTTP_PORT,HTTPS_PORT', got {spec!r}")
    https_host, sep2, https_port_s = parts[1].rpartition(":")
    if sep2 and https_host.strip("[]") != host.strip("[]"):
        raise ValueError(f"HTTP and HTTPS ports must be on the same host, got {spec!r}")
    host = host.strip("[]")
    if not _is_loopback(host):
        raise ValueError(f"the test origin must be on loopback, got {host!r}")
    http_port, https_port = int(http_port_s), int(https_port_s)
    for port in (http_port, https_port):
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port} in {spec!r}")
    return host, http_port, https_port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Redirect:
    """Redirects upstream connections to the loopback test origin and restores the real address afterwards."""

    def __init__(self) -> None:
        self.origin: tuple[str, int, int] | None = None
        self.local_hosts: frozenset[str] = frozenset(DEFAULT_LOCAL_HOSTS)
        # server connection id -> the address the client asked for
        self._real: dict[str, Address] = {}
        self.redirected = 0
        self.refused = 0

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "testkit_origin",
            str,
            "",
            "Test kit: loopback origin 'HOST:HTTP_PORT,HTTPS_PORT' that every upstream connection is sent to "
            "(port 443 or TLS -> HTTPS_PORT, port 80 -> HTTP_PORT). Empty: refuse every non-loopback connection.",
        )
        loader.add_option(
            "testkit_local_hosts",
            Sequence[str],
            [],
            "Test kit: extra host names the proxy answers itself; connections to them are refused "
            "(captcha.mitm, mitm.it and the addon's captcha_host always are).",
        )

    def configure(self, updated: set[str]) -> None:
        if "testkit_origin" in updated:
            try:
                self.origin = parse_origin(ctx.options.testkit_origin)
            except ValueError as e:
                raise exceptions.OptionsError(f"testkit_origin: {e}") from e
        hosts = set(DEFAULT_LOCAL_HOSTS)
        hosts.update(h.lower() for h in ctx.options.testkit_local_hosts)
        if "captcha_host" in ctx.options and ctx.options.captcha_host:
            hosts.add(str(ctx.options.captcha_host).lower())
        if "onboarding_host" in ctx.options and ctx.options.onboarding_host:
            hosts.add(str(ctx.options.onboarding_host).lower())
        self.local_hosts = frozenset(hosts)

    def target(self, address: Address, tls: bool) -> Address | str:
        """Where a connection to ``address`` goes: a loopback address, or the reason it is refused."""
        host, port = address[0], address[1]
        if host.lower().rstrip(".") in self.local_hosts:
            return f"testkit: {host} is answered by the proxy itself and never connected to"
        if _is_loopback(host):
            return (host, port)
        if self.origin is None:
            return f"testkit: no testkit_origin set, refusing to connect to {host}:{port}"
        origin_host, http_port, https_port = self.origin
        if tls or port == 443:
            return (origin_host, https_port)
        if port == 80:
            return (origin_host, http_port)
        return f"testkit: refusing {host}:{port} (only ports 80 and 443 are mapped to the test origin)"

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.error or server.address is None:
            return
        if server.via is not None and not _is_loopback(str(server.via[1][0])):
            server.error = "testkit: upstream proxies off loopback are not allowed in tests"
            self.refused += 1
            return
        real: Address = (server.address[0], server.address[1])
        target = self.target(real, server.tls)
        if isinstance(target, str):
            server.error = target
            self.refused += 1
            logger.info(target)
            return
        if target != real:
            self._real[server.id] = real
            server.address = target
            self.redirected += 1
            logger.debug(f"testkit: {real[0]}:{real[1]} -> {target[0]}:{target[1]}")

    def _restore(self, data: server_hooks.ServerConnectionHookData) -> None:
        real = self._real.pop(data.server.id, None)
        if real is not None:
            # `Server.__setattr__` refuses to change the address of an open connection ("Cannot change
            # server.address on open connection."), which it is in server_connected. We do not move the
            # connection, only relabel it, so go around the guard. `peername` keeps the real 127.0.0.1:port.
            object.__setattr__(data.server, "address", real)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)


addons = [Redirect()]
