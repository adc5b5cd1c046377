"""Each tenant's rate of accepted messages, shared by every api replica through Redis.

A bucket is a GCRA token bucket (the "generic cell rate algorithm" of ATM networks): one Redis
string per bucket holds its theoretical arrival time, in microseconds of Redis's own clock, so
the api hosts' clocks never matter. One EVALSHA per request reads it, decides and writes it;
the string expires when the bucket would be full again, so an idle tenant leaves nothing behind.

Keys without their own --rate share their tenant's bucket (HERALD_TENANT_RATE); a key with one
has a bucket of its own at that rate, not drawn from its tenant's: each bucket has one rate.
Redis down: the request is let through (ingest stays up, DESIGN "Degraded"), logged and counted.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import falcon
import redis
from prometheus_client import Counter

from herald.core.auth import Principal
from herald.core.settings import Settings

log = logging.getLogger(__name__)

# After Redis failed, requests skip it for this long: a hung Redis (socket timeout) must not add
# its timeout to every request, and the warning is logged at most once per period.
SKIP_AFTER_FAILURE_SECONDS = 1.0

# KEYS[1]: the bucket. ARGV: rate (messages/s), burst (messages), cost (messages).
# Answers {allowed 0|1, remaining, µs until cost fits (0 if allowed), µs until full}.
# Scripts replicate their effects (Redis >= 5), so reading TIME before a write is allowed.
_GCRA = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / rate
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  local left = math.max(0, math.floor((now - (tat - burst * interval)) / interval))
  return {0, left, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / interval), 0, math.ceil(new_tat - now)}
"""


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a bucket stands after a request: what the RateLimit-* headers say."""

    allowed: bool
    limit: int  # messages per second, and the burst
    remaining: int
    retry_after: int  # whole seconds, >= 1 when refused
    reset: int  # whole seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        """RateLimit-Limit/-Remaining/-Reset (draft-ietf-httpapi-ratelimit-headers, its
        widely used earlier form)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


def _seconds(microseconds: int) -> int:
    return math.ceil(microseconds / 1_000_000)


class RateLimits:
    """The buckets of every tenant and key with a rate of its own, in settings' Redis."""

    def __init__(self, settings: Settings, client: redis.Redis[bytes]) -> None:
        self._default_rate = settings.tenant_rate
        self._prefix = f"{settings.redis_namespace}:ratelimit"
        self._script = client.register_script(_GCRA)  # EVALSHA; loads it again after a flush
        self._skip_until = 0.0
        self._unavailable = Counter(
            "herald_rate_limit_unavailable_total",
            "Ingest requests let through unlimited because Redis could not be asked.",
            registry=None,  # multiprocess: samples live in files, the scrape collects them
        )

    def _bucket(self, principal: Principal) -> tuple[str, int]:
        if principal.rate is None:
            return f"{self._prefix}:tenant:{principal.tenant}", self._default_rate
        return f"{self._prefix}:key:{principal.key_id}", principal.rate

    def take(self, principal: Principal, cost: int) -> Standing | None:
        """Take cost messages from principal's bucket if they fit (all or none); None when
        Redis could not be asked (let through: fail open)."""
        key, rate = self._bucket(principal)
        if cost > rate:  # more than the burst: no wait makes it fit
            return Standing(False, rate, 0, 0, 0)
        if time.monotonic() < self._skip_until:
            self._unavailable.inc()
            return None
        try:
            allowed, remaining, wait, full = self._script(keys=[key], args=[rate, rate, cost])
        except redis.RedisError as error:
            self._skip_until = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
            self._unavailable.inc()
            log.warning("rate limit unavailable, letting requests through: %r", error)
            return None
        return Standing(bool(allowed), rate, remaining, max(1, _seconds(wait)), _seconds(full))


def too_many(standing: Standing, cost: int) -> falcon.HTTPTooManyRequests:
    """The 429 of a request refused by its bucket: when to retry, and why."""
    if standing.retry_after == 0:
        return falcon.HTTPTooManyRequests(
            title="Batch larger than the rate limit",
            description=f"{cost} messages are more than this key's burst of {standing.limit};"
            f" send at most {standing.limit} at a time",
            headers=standing.headers(),
        )
    return falcon.HTTPTooManyRequests(
        title="Rate limit exceeded",
        description=f"this tenant may send {standing.limit} messages per second;"
        f" nothing was stored, retry after {standing.retry_after} s",
        headers=standing.headers(),
        retry_after=standing.retry_after,
    )


def admit(limits: RateLimits, principal: Principal, cost: int, resp: falcon.Response) -> None:
    """Let cost messages of principal through, telling the client where it stands, or raise
    the 429 that refuses them all."""
    standing = limits.take(principal, cost)
    if standing is None:
        return  # Redis down: let through without headers (nothing is known)
    if not standing.allowed:
        raise too_many(standing, cost)
    resp.set_headers(standing.headers())
