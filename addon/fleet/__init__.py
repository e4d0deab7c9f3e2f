"""Fleet mode: several proxies share one Redis (a stream of events, per-client answers, shared solving, a budget).

Pieces (each its own module, each usable alone):
- `stream.RedisEventStream`: an outlet of the event bus; appends every event to the fleet's stream and keeps the
  per-client lookups, from a bounded in-memory backlog, never blocking the proxy.
- `reader.FleetReader`: what the HTTP API asks for another proxy's client (newest final, walk in order, long poll
  woken by the stream, newest events, fleet-wide stats).
- `heartbeat.Heartbeat`: writes this proxy's counters every few seconds, with an expiry.
- `shared.FleetSolveCoordinator`: one solve per image set across the fleet (claim with expiry, answer cache,
  takeover when the owner dies) and a fleet-wide cap on paid jobs in flight.

Key layout. Every key (not the stream itself, whose name the user picks) starts with `{T}:`, where T is the
stream's own Redis Cluster hash tag: the part between the first `{` and the next `}` when the stream name has a
non-empty one, else the whole stream name. So for the default stream `captcha:events` the keys are
`{captcha:events}:client:<client>:final` and so on, and they hash to the same slot as the stream. That is what
lets one Lua script append a batch of events to the stream *and* update the per-client lookups and this run's
write mark atomically (the atomicity is what makes a retried batch exactly-once, see `stream`), and it still
works unchanged on Redis Cluster, where a script may only touch keys of one slot. The price is that the whole
fleet's data lives on one shard; the volume (one stream, a few keys per device) is small enough for that.
Two fleets on one Redis with different stream names never see each other's keys.

    <stream>                           the stream: fields event (JSON), run, seq, client
    {T}:run:<run>:mark                 highest seq of <run> already in the stream (dedupe of retried batches)
    {T}:client:<c>:final               "<stream id> <event JSON>" of the client's newest final event (1 day)
    {T}:client:<c>:finals              list, newest first, the client's last 64 finals, same format (1 day)
    {T}:client:<c>:newest              "<stream id> <event JSON>" of the client's newest `captured` event (1 day)
    {T}:client:<c>:events              list, newest first, the client's last 100 events of any kind (1 day)
    {T}:proxies                        sorted set run -> time (ms, Redis clock) of its last heartbeat
    {T}:proxy:<run>                    hash of that proxy's counters, flattened ("failed.timeout"), ~60 s expiry
    {T}:claim:<image key>              owner of the in-flight solve of that image set (PX expiry)
    {T}:answer:<image key>             the answer JSON for that image set (PX expiry); channel of the same name
    {T}:paid                           sorted set of paid-job holders -> lease expiry (ms, Redis clock)
    {T}:paid:free                      channel: a paid slot was released

Times that several proxies compare (leases, heartbeats) come from Redis's own clock (`TIME`), never a proxy's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    BusyLoadingError,
    InvalidResponse,
    NoPermissionError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "DEFAULT_STREAM",
    "REDIS_FAILURES",
    "FleetKeys",
    "LinkState",
    "connect",
    "describe_error",
    "hash_tag",
    "probe",
    "redact_url",
    "redis_failure",
    "scrub",
    "validate_url",
]

logger = logging.getLogger(__name__)

DEFAULT_STREAM = "captcha:events"
SCHEMES = ("redis", "rediss", "unix")
_EXTRA_QUERY_ARGS = frozenset(("password", "username", "client_name", "protocol", "ssl_cert_reqs", "ssl_ca_certs",
                               "ssl_certfile", "ssl_keyfile"))
_SECRET_QUERY_ARGS = frozenset(("password", "pass", "auth"))


def _split(url: str) -> tuple[str, str, str, str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc, parts.path, parts.query, parts.fragment


def redact_url(url: str) -> str:
    """The URL with its password (and a lone user part, which old clients read as a password) shown as `***`."""
    try:
        scheme, netloc, path, query, _ = _split(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else f"***@{hostport}"
    if query:
        pairs = []
        for item in query.split("&"):
            name, eq, _ = item.partition("=")
            pairs.append(f"{name}=***" if eq and name.lower() in _SECRET_QUERY_ARGS else item)
        query = "&".join(pairs)
    if not scheme:
        return "<not a URL>"
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _secrets(url: str) -> list[str]:
    out: list[str] = []
    try:
        _scheme, netloc, _, query, _ = _split(url)
    except ValueError:
        return [url] if url else []
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        user, sep, password = userinfo.partition(":")
        out += [password, unquote(password)] if sep else [user, unquote(user)]
    for name, values in parse_qs(query).items():
        if name.lower() in _SECRET_QUERY_ARGS:
            out += values + [quote(v) for v in values]
    return [s for s in out if s]


def scrub(text: str, url: str) -> str:
    """`text` with every secret of `url` (password, in raw and %-encoded form) replaced by `***`."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def validate_url(url: str) -> str:
    """Checks a `captcha_redis` value and returns it redacted (for log lines); ValueError names the problem.

    Syntax only: whether the host resolves and the password is right shows when connecting (`probe`).
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("captcha_redis is empty")
    url = url.strip()
    shown = redact_url(url)
    if any(ch.isspace() for ch in url) or "://" not in url:
        raise ValueError("captcha_redis is not a URL: expected redis://[user:password@]host[:port][/db], "
                         "rediss://... or unix:///path/to/socket")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"captcha_redis {shown!r} has a bad port: {scrub(str(e), url)}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"captcha_redis {shown!r} has scheme {parts.scheme!r}; expected one of redis://, rediss://, "
                         "unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"captcha_redis {shown!r} names no socket path")
    else:
        if not parts.hostname:
            raise ValueError(f"captcha_redis {shown!r} names no host")
        if port == 0:
            raise ValueError(f"captcha_redis {shown!r} has port 0")
        db = unquote(parts.path).strip("/")
        if db and not db.isdigit():
            raise ValueError(f"captcha_redis {shown!r}: the path must be a database number, not {db!r}")
    for name, values in parse_qs(parts.query).items():
        if name not in URL_QUERY_ARGUMENT_PARSERS and name not in _EXTRA_QUERY_ARGS:
            raise ValueError(f"captcha_redis {shown!r} has an unknown parameter {name!r}")
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is not None:
            try:
                parser(values[0])
            except (TypeError, ValueError):
                raise ValueError(f"captcha_redis {shown!r} has a bad value for {name!r}") from None
    return shown


def connect(url: str, *, socket_timeout: float = 10.0, connect_timeout: float = 2.0) -> aioredis.Redis:
    """A client for `url` (validated first) that fails fast: one immediate retry (a pooled connection that a
    restart broke), no backoff inside redis-py; callers keep their own backoff. Responses are decoded as UTF-8."""
    validate_url(url)
    client: aioredis.Redis = aioredis.Redis.from_url(
        url.strip(),
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
    )
    return client


REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # refused, unknown host, closed, auth (AuthenticationError), loading (BusyLoadingError)
    RedisTimeoutError,
    ResponseError,  # the server refused the command: OOM, READONLY, NOPERM, WRONGTYPE, cluster redirects, ...
    InvalidResponse,  # something that does not speak RESP answered
    OSError,  # a socket error redis-py let through; TimeoutError (asyncio's too) is one
)
"""What counts as Redis failing, by exception type. Anything else raised while talking to Redis (AttributeError,
TypeError, redis-py's DataError for an argument we built wrong, ...) is a bug of ours, never "Redis is down"."""


def redis_failure(exc: BaseException) -> bool:
    """True when `exc` says Redis (or the way to it) failed, False for a bug in our code (see `REDIS_FAILURES`)."""
    return isinstance(exc, REDIS_FAILURES)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from or while handling: redis-py wraps the socket's OSError in its own
    ConnectionError, whose context keeps the original (gaierror, ConnectionRefusedError, ...)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_error(exc: BaseException, url: str) -> str:
    """One clear, password-free line on why Redis at `url` did not answer, chosen by the exception's type (and the
    types it was raised from), never by its text, which only follows as the detail."""
    text = scrub(f"{exc}", url)
    where = redact_url(url)
    try:
        host = urlsplit(url).hostname or "?"
    except ValueError:
        host = "?"
    chain = list(_causes(exc))

    def caused_by(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return f"Redis at {where} refused the credentials (wrong password or user): {text}"
    if isinstance(exc, AuthorizationError | NoPermissionError):
        return f"Redis at {where} does not let this user run a command the fleet needs (ACL): {text}"
    if isinstance(exc, BusyLoadingError):
        return f"Redis at {where} is loading its data set (restarting?)"
    if caused_by(socket.gaierror):
        return f"Redis host {host!r} is unknown (name does not resolve): {where}"
    if caused_by(ConnectionRefusedError):
        return f"Redis at {where} refused the connection (is redis-server running there?)"
    if caused_by(RedisTimeoutError, TimeoutError):
        return f"Redis at {where} did not answer in time"
    if caused_by(ConnectionResetError, BrokenPipeError, ConnectionAbortedError, asyncio.IncompleteReadError):
        return f"Redis at {where} closed the connection (restarting?)"
    if isinstance(exc, RedisConnectionError):
        return f"Redis at {where} closed or lost the connection (restarting?): {text}"
    if isinstance(exc, ResponseError):
        return f"Redis at {where} refused a command: {text}"
    if isinstance(exc, OSError):
        return f"Redis at {where}: network error: {type(exc).__name__}: {text}"
    return f"Redis at {where}: {type(exc).__name__}: {text}"


PROBE_TIMEOUT_S = 3.0


async def probe(url: str, client: aioredis.Redis | None = None) -> str | None:
    """None when Redis at `url` answers PING (auth included) within PROBE_TIMEOUT_S, else a clear, password-free
    line on why not. `client`: the proxy's own (made with `connect(url)`), else one is made for the probe."""
    try:
        validate_url(url)
    except ValueError as e:
        return str(e)
    own = client is None
    if client is None:
        client = connect(url, socket_timeout=PROBE_TIMEOUT_S)
    try:
        # wait_for as well: a shared client's socket timeout is the longer one of its other commands.
        await asyncio.wait_for(client.ping(), PROBE_TIMEOUT_S)
        return None
    except Exception as e:
        if redis_failure(e):
            return describe_error(e, url)
        logger.error("captcha fleet: internal error while checking Redis at %s (a bug, not Redis failing): %s",
                     redact_url(url), scrub("".join(traceback.format_exception(e)).rstrip(), url))
        return None
    finally:
        if own:
            await client.aclose()


def hash_tag(name: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty `{...}`, else the whole name."""
    start = name.find("{")
    if start >= 0:
        end = name.find("}", start + 1)
        if end > start + 1:
            return name[start + 1:end]
    return name


@dataclass(frozen=True, slots=True)
class FleetKeys:
    """Every Redis key and channel of one fleet, all in the stream's hash slot (see the module docstring)."""

    stream: str = DEFAULT_STREAM

    def __post_init__(self) -> None:
        if not self.stream or any(ch.isspace() for ch in self.stream):
            raise ValueError(f"captcha_redis_stream {self.stream!r} is not a usable key name")
        tag = hash_tag(self.stream)
        if "{" in tag or "}" in tag:
            raise ValueError(f"captcha_redis_stream {self.stream!r}: braces must form one non-empty {{hash tag}}")

    @property
    def prefix(self) -> str:
        return "{" + hash_tag(self.stream) + "}:"

    def run_mark(self, run: str) -> str:
        return f"{self.prefix}run:{run}:mark"

    def client_final(self, client: str) -> str:
        return f"{self.prefix}client:{client}:final"

    def client_finals(self, client: str) -> str:
        return f"{self.prefix}client:{client}:finals"

    def client_newest(self, client: str) -> str:
        return f"{self.prefix}client:{client}:newest"

    def client_events(self, client: str) -> str:
        return f"{self.prefix}client:{client}:events"

    @property
    def proxies(self) -> str:
        return f"{self.prefix}proxies"

    def proxy(self, run: str) -> str:
        return f"{self.prefix}proxy:{run}"

    def claim(self, image_key: str) -> str:
        return f"{self.prefix}claim:{image_key}"

    def answer(self, image_key: str) -> str:
        return f"{self.prefix}answer:{image_key}"

    @property
    def paid(self) -> str:
        return f"{self.prefix}paid"

    @property
    def paid_free(self) -> str:
        return f"{self.prefix}paid:free"


INTERNAL_ERROR_LOG_EVERY_S = 60.0
"""At most one internal-error line (with traceback) per link this often; the count of the others follows."""


class LinkState:
    """Up/down bookkeeping for one link to Redis: one warning when it goes, one info line when it is back.

    `what` names the part in the lines ("" for none); `summary`, when set, ends the warning in place of the
    failing part's own detail: a link shared by every part of a proxy says what the outage means for the whole
    proxy, whichever part happened to notice it first."""

    def __init__(self, logger: logging.Logger, url: str, what: str, summary: str = ""):
        self._logger = logger
        self._url = url
        self._what = f"{what}: " if what else ""
        self.summary = summary
        self.down = False
        self.last_error: str | None = None
        self.on_down: list[Callable[[], None]] = []
        """Called (on the event loop) when the link goes down: the stream wakes up to ping for the way back."""
        self.internal_errors = 0
        """Errors of our own code met while talking to Redis (see `failed`)."""
        self._internal_logged_at: float | None = None
        self._internal_reported = 0

    def failed(self, exc: BaseException, detail: str = "") -> bool:
        """A call to Redis raised `exc`. True when that is Redis failing (the link goes down, logged once per
        outage); False when it is a bug of ours, logged as one (with its traceback, at most one a minute) while
        the link keeps its state: Redis is not reported down for it."""
        if not redis_failure(exc):
            self.internal_error(exc)
            return False
        self.last_error = describe_error(exc, self._url)
        if not self.down:
            self.down = True
            self._logger.warning("captcha fleet: %s%s%s", self._what, self.last_error, self.summary or detail)
            for listener in self.on_down:
                listener()
        return True

    def internal_error(self, exc: BaseException) -> None:
        """An error of our own code in a Redis part: ERROR with the traceback, rate-limited (the part retries)."""
        self.internal_errors += 1
        now = time.monotonic()
        if self._internal_logged_at is not None and now - self._internal_logged_at < INTERNAL_ERROR_LOG_EVERY_S:
            return
        self._internal_logged_at = now
        more = self.internal_errors - self._internal_reported
        self._internal_reported = self.internal_errors
        tail = f" ({more - 1} more since the last such line)" if more > 1 else ""
        # The traceback goes through `scrub` as well: an exception's text may quote the URL, password and all.
        trace = scrub("".join(traceback.format_exception(exc)).rstrip(), self._url)
        self._logger.error("captcha fleet: %sinternal error talking to Redis at %s (a bug, not Redis failing; "
                           "the link is not marked down)%s: %s: %s\n%s", self._what, redact_url(self._url), tail,
                           type(exc).__name__, scrub(str(exc), self._url), trace)

    def down_at_start(self, message: str) -> None:
        """The start-up probe found Redis unusable and has logged `message` itself: the link counts as down (no
        second line when a part fails next), and the stream pings until Redis answers, then says it is back."""
        if not self.down:
            self.down = True
            self.last_error = message
            for listener in self.on_down:
                listener()

    def ok(self, detail: str = "") -> None:
        if self.down:
            self.down = False
            self.last_error = None
            self._logger.info("captcha fleet: %sRedis at %s is back%s", self._what, redact_url(self._url), detail)
