"""Shared solving across the fleet: one solve per image set, a fleet-wide answer cache, a cap on paid jobs.

The flow a scheduler follows for one challenge (`image_key` = `image_set_key(...)` of its images); `solve_shared`
is this flow, ready to wrap the scheduler's chain of solvers:

    while time is left:
        claimed, answer = await fleet.claim_or_answer(key, owner, ttl)  # one round trip
        if answer is not None:                               # solved before, anywhere in the fleet
            return answer
        if claimed:                                          # ours: solve (renew the claim while it runs)
            answer = <solve>; await fleet.finish(key, owner, answer, cache_ttl)  # publish + release, one trip
            return answer
        answer = await fleet.wait_answer(key, time_left)     # another proxy is on it; None: its owner died or
                                                             # gave up -> loop, take over

The solving proxy's own answer waits for two round trips to Redis in all (`claim_or_answer`, `finish`); the
separate steps (`cached_answer`, `claim`, `publish_answer`, `release`) are there for callers that need them.

`claim` is refused while an answer is cached, so a proxy that checked the cache a moment before the owner
published does not solve the set again. A claim expires (`ttl`) unless renewed, so the owner dying mid-job
frees it; `wait_answer` wakes on a PUBLISH on the answer's channel, or when the claim's own expiry passes
(read with PTTL, so not a polling timer), and then looks once more.

Paid jobs: `acquire_paid_slot(limit, owner, ttl)` holds one of `limit` slots fleet-wide as a lease in a sorted
set (member = owner, score = lease end on Redis's clock); leases of holders that died run out and are swept by
the next acquire. `wait_paid_slot` waits for a slot, woken by `release_paid_slot`'s PUBLISH or by the earliest
lease's end.

Redis is never allowed to stop solving: on a Redis error every method fails open (claim and the paid slot are
granted, cache reads miss, waits return None), logged once per outage; the local limits still apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from addon.fleet import DEFAULT_STREAM, FleetKeys, LinkState

logger = logging.getLogger(__name__)

# By hand rather than redis-py's Lock: a claim is refused while the image set has an answer, and letting go of one
# stores the answer and wakes the waiters on its channel in the same atomic step.
# KEYS: claim, answer. ARGV: owner, ttl ms. 1 = claimed (or already ours, renewed), 0 = someone else's or answered.
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: claim, answer. ARGV: owner, ttl ms. {0, answer} = answered; else `_CLAIM`'s {1} or {0}.
_CLAIM_OR_ANSWER = """
local answer = redis.call('GET', KEYS[2])
if answer then return {0, answer} end
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return {1} end
if v then return {0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1}
"""
# KEYS: claim, answer. ARGV: owner, answer ('' = none), answer ttl ms. Stores the answer, drops the claim if it is
# still the owner's, and wakes the waiters (on the answer's channel) when either happened. 1 = the claim was ours.
_FINISH = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
local mine = redis.call('GET', KEYS[1]) == ARGV[1]
if mine then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then
  redis.call('PUBLISH', KEYS[2], 'answer')
elseif mine then
  redis.call('PUBLISH', KEYS[2], 'released')
end
if mine then return 1 end
return 0
"""
# KEYS: claim. ARGV: owner, ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: claim. ARGV: owner, channel.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
"""
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
# KEYS: paid zset. ARGV: limit, owner, ttl ms. Returns {1, 0} when held, else {0, ms until the earliest lease ends}.
_ACQUIRE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(first[2]) - now}
"""
# KEYS: paid zset. ARGV: owner, ttl ms.
_RENEW_PAID = _NOW + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
# KEYS: paid zset. ARGV: owner, channel.
_RELEASE_PAID = """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n == 1 then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return n
"""


CLAIM_TTL_S = 5.0
"""How long a claim outlives its owner: the owner renews it every third of this while it solves, so a proxy that
died mid-job holds the image set up for at most this long before another takes over. Longer means fewer duplicate
paid jobs when Redis is briefly unreachable (renewals fail open, and a claim that ran out meanwhile can be taken);
shorter means quicker takeovers. A Redis round trip is well under this."""


def image_set_key(kind: str, images: Mapping[str, str]) -> str:
    """The fleet-wide key of one image set: `kind` and role -> sha256 of each image body."""
    text = kind + "|" + "|".join(f"{role}={sha}" for role, sha in sorted(images.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class FleetSolveCoordinator:
    def __init__(self, redis: aioredis.Redis, stream: str = DEFAULT_STREAM, *, url: str = "",
                 link: LinkState | None = None):
        """`redis`: a client made with `addon.fleet.connect(url)` (decode_responses=True); `url` only for logs;
        `link`: share the event stream's (`RedisEventStream.link`) so an outage is logged once per proxy."""
        self.redis = redis
        self.keys = FleetKeys(stream)
        self._link = link or LinkState(logger, url or "redis://?", "shared solving")
        self._owns_link = link is None
        self._claim = redis.register_script(_CLAIM)
        self._claim_or_answer = redis.register_script(_CLAIM_OR_ANSWER)
        self._finish = redis.register_script(_FINISH)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew_paid = redis.register_script(_RENEW_PAID)
        self._release_paid = redis.register_script(_RELEASE_PAID)

    def _ok(self) -> None:
        if self._owns_link:
            self._link.ok()

    def _failed(self, e: BaseException) -> None:
        """Fails open either way; `LinkState.failed` tells Redis failing (the link goes down) from a bug of ours."""
        self._link.failed(e, "; solving without the fleet (claims and paid slots granted locally)")

    # -- one solve per image set ---------------------------------------------------------------------------------

    async def claim(self, image_key: str, owner: str, ttl: float) -> bool:
        try:
            got = await self._claim(keys=[self.keys.claim(image_key), self.keys.answer(image_key)],
                                    args=[owner, _ms(ttl)])
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return True
        self._ok()
        return bool(got)

    async def claim_or_answer(self, image_key: str, owner: str, ttl: float) -> tuple[bool, str | None]:
        """`cached_answer` and `claim` in one round trip: (False, answer) when the set is answered, else (whether
        `owner` holds the claim now, None)."""
        try:
            reply = await self._claim_or_answer(keys=[self.keys.claim(image_key), self.keys.answer(image_key)],
                                                args=[owner, _ms(ttl)])
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return True, None
        self._ok()
        if len(reply) > 1:
            return False, _text(reply[1])
        return bool(reply[0]), None

    async def finish(self, image_key: str, owner: str, answer_json: str | None, ttl: float) -> bool:
        """`publish_answer` (when there is an answer) and `release` in one round trip; True when the claim was
        still `owner`'s."""
        try:
            return bool(await self._finish(keys=[self.keys.claim(image_key), self.keys.answer(image_key)],
                                           args=[owner, answer_json or "", _ms(ttl)]))
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return False

    async def renew(self, image_key: str, owner: str, ttl: float) -> bool:
        """True while the claim is still `owner`'s (its expiry pushed to `ttl` from now)."""
        try:
            return bool(await self._renew(keys=[self.keys.claim(image_key)], args=[owner, _ms(ttl)]))
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return True

    async def release(self, image_key: str, owner: str) -> bool:
        """Drops the claim if it is still `owner`'s, and wakes the waiters (who then take over if no answer)."""
        try:
            return bool(await self._release(keys=[self.keys.claim(image_key)],
                                            args=[owner, self.keys.answer(image_key)]))
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return False

    async def publish_answer(self, image_key: str, answer_json: str, ttl: float) -> bool:
        key = self.keys.answer(image_key)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(key, answer_json, px=_ms(ttl))
            pipe.publish(key, "answer")
            await pipe.execute()
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return False
        return True

    async def cached_answer(self, image_key: str) -> str | None:
        try:
            value = _text(await self.redis.get(self.keys.answer(image_key)))
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return None
        self._ok()
        return value

    async def solve_once(self, image_key: str, owner: str, timeout: float,
                         solve: Callable[[], Awaitable[str | None]]) -> tuple[str | None, bool]:
        """The scheduler's seam (``addon/solving/sharing.py``): ``solve_shared`` on this coordinator."""
        return await solve_shared(self, image_key, owner, timeout, solve)

    async def drop_answer(self, image_key: str) -> None:
        """Forgets a cached answer (say, the site refused it)."""
        try:
            await self.redis.delete(self.keys.answer(image_key))
        except Exception as e:  # classified by `_failed`
            self._failed(e)

    async def wait_answer(self, image_key: str, timeout: float) -> str | None:
        """The answer once published; None at `timeout`, or at once when the set is not (or no longer) claimed
        and has no answer: its owner gave up or died, the caller takes over."""
        deadline = time.monotonic() + timeout
        claim, answer = self.keys.claim(image_key), self.keys.answer(image_key)
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(answer)  # before the first look, so no publish falls in between
            while True:
                pipe = self.redis.pipeline(transaction=False)
                pipe.get(answer)
                pipe.pttl(claim)
                value, pttl = await pipe.execute()
                if value is not None:
                    return str(value)
                if pttl == -2:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = left if pttl < 0 else min(left, pttl / 1000 + 0.005)
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return None
        finally:
            await _close(pubsub)

    # -- the fleet's paid-job budget -----------------------------------------------------------------------------

    async def _try_paid(self, limit: int, owner: str, ttl: float) -> tuple[bool, float]:
        held, wait_ms = await self._acquire(keys=[self.keys.paid], args=[limit, owner, _ms(ttl)])
        return bool(held), max(0, int(wait_ms)) / 1000

    async def acquire_paid_slot(self, limit: int, owner: str, ttl: float) -> bool:
        """One of `limit` paid jobs in flight fleet-wide, leased to `owner` for `ttl` s (again: renewed)."""
        try:
            held, _ = await self._try_paid(limit, owner, ttl)
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return True
        self._ok()
        return held

    async def wait_paid_slot(self, limit: int, owner: str, ttl: float, timeout: float) -> bool:
        """`acquire_paid_slot`, waiting up to `timeout` s for a release or a lease to run out."""
        deadline = time.monotonic() + timeout
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.keys.paid_free)
            while True:
                held, wait = await self._try_paid(limit, owner, ttl)
                left = deadline - time.monotonic()
                if held or left <= 0:
                    return held
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, wait + 0.005))
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return True
        finally:
            await _close(pubsub)

    async def renew_paid_slot(self, owner: str, ttl: float) -> bool:
        try:
            return bool(await self._renew_paid(keys=[self.keys.paid], args=[owner, _ms(ttl)]))
        except Exception as e:  # classified by `_failed`
            self._failed(e)
            return True

    async def release_paid_slot(self, owner: str) -> None:
        try:
            await self._release_paid(keys=[self.keys.paid], args=[owner, self.keys.paid_free])
        except Exception as e:  # classified by `_failed`
            self._failed(e)

    async def paid_holders(self) -> int:
        """Paid jobs in flight fleet-wide (leases not yet run out), for the stats."""
        seconds, micros = await self.redis.time()
        count: int = await self.redis.zcount(self.keys.paid, f"({seconds * 1000 + micros // 1000}", "+inf")
        return count


async def solve_shared(fleet: FleetSolveCoordinator, image_key: str, owner: str, timeout: float,
                       solve: Callable[[], Awaitable[str | None]], *, claim_ttl: float = CLAIM_TTL_S,
                       cache_ttl: float = 3600.0) -> tuple[str | None, bool]:
    """The flow of the module docstring: (answer JSON or None, whether `solve` ran here).

    `solve` runs at most once here, only while this proxy holds the claim (renewed every claim_ttl / 3 s); its
    answer is cached fleet-wide for `cache_ttl` s. An exception from `solve` releases the claim (the waiters then
    take over) and propagates. None: the deadline passed, or `solve` gave None.
    """
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        claimed, cached = await fleet.claim_or_answer(image_key, owner, claim_ttl)
        if cached is not None:
            return cached, False
        if claimed:
            keeper = asyncio.create_task(_keep_claim(fleet, image_key, owner, claim_ttl),
                                         name=f"captcha-fleet-claim:{image_key}")
            answer: str | None = None
            try:
                answer = await solve()
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper  # a renewal in flight must not land after the claim is released
                await fleet.finish(image_key, owner, answer, cache_ttl)
            return answer, True
        answer = await fleet.wait_answer(image_key, left)
        if answer is not None:
            return answer, False
    return None, False


async def _keep_claim(fleet: FleetSolveCoordinator, image_key: str, owner: str, ttl: float) -> None:
    while True:
        await asyncio.sleep(ttl / 3)
        if not await fleet.renew(image_key, owner, ttl):
            logger.warning("captcha fleet: lost the claim on image set %s (expired while solving)", image_key)
            return


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["CLAIM_TTL_S", "FleetSolveCoordinator", "image_set_key", "solve_shared"]
