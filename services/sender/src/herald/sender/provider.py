"""The provider's HTTP contract: one call per attempt, and what each answer means for us."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime

import httpx

from herald.core.metrics import SenderMetrics
from herald.core.settings import Settings
from herald.core.transitions import Claimed

# Worth trying again: the request timed out or was throttled, or the provider itself failed.
TRANSIENT_CODES = frozenset({408, 429})
MAX_ERROR_CHARS = 500


class TransientError(Exception):
    """The attempt failed but a later one may succeed; retry_after_ms if the provider said when."""

    def __init__(self, reason: str, retry_after_ms: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after_ms = retry_after_ms


class PermanentError(Exception):
    """The provider refused the message itself; trying again cannot help."""


def retry_after_ms(value: str | None, cap_ms: int, now: float | None = None) -> int | None:
    """Retry-After (delta-seconds or an HTTP date) in milliseconds, capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        delay = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        delay = when.timestamp() - (time.time() if now is None else now)
    return min(cap_ms, max(0, round(delay * 1000)))


def _describe(response: httpx.Response) -> str:
    return f"HTTP {response.status_code}: {response.text[:MAX_ERROR_CHARS]}".rstrip(": ")


def classify(response: httpx.Response, cap_ms: int) -> None:
    """Return on 2xx; raise TransientError (408, 429, 5xx, other) or PermanentError (other 4xx)."""
    code = response.status_code
    if 200 <= code < 300:
        return
    if 400 <= code < 500 and code not in TRANSIENT_CODES:
        raise PermanentError(_describe(response))
    delay = retry_after_ms(response.headers.get("Retry-After"), cap_ms)
    raise TransientError(_describe(response), delay)


class Provider:
    """HTTP clients for the provider: one kept-alive connection per worker thread.

    A worker thread makes one call at a time, so a connection of its own is all it needs. One
    pool shared by many threads would cost more: httpcore scans every pooled connection (and
    polls its socket) on each request, which at 64 threads took most of a sender's CPU.
    """

    def __init__(self, settings: Settings, metrics: SenderMetrics) -> None:
        self._metrics = metrics
        self._url = settings.provider_url.rstrip("/") + "/message"
        self._timeout = settings.provider_timeout
        self._cap_ms = settings.max_backoff_ms
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    @property
    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def deliver(self, message: Claimed) -> None:
        """One attempt; the message id is the Idempotency-Key, so a repeat has no second effect."""
        started = time.perf_counter()
        try:
            response = self._client.post(
                self._url,
                json={"destination": message.destination, "body": message.body},
                headers={"Idempotency-Key": message.id},
            )
        except httpx.TimeoutException:
            self._observe("timeout", started)
            raise TransientError(f"no answer within {self._timeout:g} s") from None
        except httpx.TransportError as error:
            self._observe("connection_error", started)
            raise TransientError(f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]) from None
        self._observe(str(response.status_code), started)
        classify(response, self._cap_ms)

    def _observe(self, code: str, started: float) -> None:
        self._metrics.provider_latency.observe(time.perf_counter() - started)
        self._metrics.provider_responses.labels(code).inc()

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
