"""The provider's HTTP contract: one call per attempt, and what each answer means for us."""

from __future__ import annotations

import logging
import math
import time
from email.utils import parsedate_to_datetime

import aiohttp

from herald.core.metrics import SenderMetrics
from herald.core.settings import Settings
from herald.core.transitions import Claimed

log = logging.getLogger(__name__)

# Worth trying again: the request timed out or was throttled, or the provider itself failed.
TRANSIENT_CODES = frozenset({408, 429})
MAX_ERROR_CHARS = 500
# The most of an answer's body read. Far more than any ordinary answer, which is read to its
# end so that its connection goes back to the pool; of a huge or endless one no more is held,
# and aiohttp closes its connection instead.
MAX_ANSWER_BYTES = 64 * 1024


class TransientError(Exception):
    """The attempt failed but a later one may succeed; retry_after_ms if the provider said when."""

    def __init__(self, reason: str, retry_after_ms: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after_ms = retry_after_ms


class PermanentError(Exception):
    """The provider refused the message itself; trying again cannot help."""


def retry_after_ms(value: str | None, cap_ms: int, now: float | None = None) -> int | None:
    """Retry-After (delta-seconds or an HTTP date) in ms, 0..cap_ms; None if absent or bad."""
    if not value:
        return None
    seconds = _delay_s(value.strip(), time.time() if now is None else now)
    if seconds is None:
        return None
    # Capped before rounding: 1e308 s is finite, but not once it is counted in milliseconds.
    return round(min(seconds * 1000, cap_ms))


def _delay_s(value: str, now: float) -> float | None:
    """The wait value asks for in seconds (a past date: 0); None unless finite and >= 0."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            return None
    # float() also reads "inf", "nan" and negatives: no wait at all, so as if the header were
    # absent (the provider contract), and the backoff policy decides.
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def classify(code: int, text: str, retry_after: str | None, cap_ms: int) -> None:
    """Return on 2xx; raise PermanentError (3xx, 4xx but 408/429) or TransientError (the rest).

    text is the answer's body, retry_after its Retry-After header (None when absent).
    """
    if 200 <= code < 300:
        return
    reason = f"HTTP {code}: {text[:MAX_ERROR_CHARS]}".rstrip(": ")
    # A redirect is the provider's answer, never followed (Provider.deliver): the contract
    # accepts a message only with a 2xx from POST {HERALD_PROVIDER_URL}/message itself.
    if 300 <= code < 500 and code not in TRANSIENT_CODES:
        raise PermanentError(reason)
    raise TransientError(reason, retry_after_ms(retry_after, cap_ms))


class Provider:
    """The provider's client for one worker process: many calls in flight on its event loop.

    aiohttp, not httpx: measured here against the stand-in at 32 calls in flight, httpx's
    AsyncClient spent ~3.5 ms of CPU per call (its pool scans every connection on each
    request) and aiohttp ~0.2 ms. The session is made on first use, inside the running loop.
    """

    def __init__(self, settings: Settings, metrics: SenderMetrics) -> None:
        self._metrics = metrics
        self._url = settings.provider_url.rstrip("/") + "/message"
        self._timeout = settings.provider_timeout
        self._cap_ms = settings.max_backoff_ms
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # No limit of its own: the worker threads waiting on the calls bound them.
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def deliver(self, message: Claimed) -> None:
        """One attempt: returns if accepted, else raises TransientError or PermanentError only."""
        try:
            await self._call(message)
        except (TransientError, PermanentError):
            raise
        except Exception as error:
            # A surprise (a bug, a library's own error, a provider URL aiohttp cannot encode)
            # is an outcome too: escaping, it would leave the row sending, and the sweeper
            # would send it again and again. Transient: it says nothing against the message,
            # and the retry limit bounds it.
            log.exception(
                "provider call raised %s", type(error).__name__, extra=log_ids(message.id)
            )
            raise TransientError(_described(error)) from None

    async def _call(self, message: Claimed) -> None:
        """One attempt; the message id is the Idempotency-Key, so a repeat has no second effect."""
        started = time.perf_counter()
        try:
            async with self._client().post(
                self._url,
                json={"destination": message.destination, "body": message.body},
                headers={"Idempotency-Key": message.id},
                # aiohttp would follow a 301-303 as a GET without the body, and count whatever
                # answers there (often 200) as delivery; a 307/308 would post the message to
                # a host HERALD_PROVIDER_URL does not name.
                allow_redirects=False,
            ) as response:
                code = response.status
                text = await _start_of_body(response)
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            self._observe("timeout", started)
            raise TransientError(f"no answer within {self._timeout:g} s") from None
        except aiohttp.ClientError as error:
            self._observe("connection_error", started)
            raise TransientError(_described(error)) from None
        self._observe(str(code), started)
        classify(code, text, retry_after, self._cap_ms)

    def _observe(self, code: str, started: float) -> None:
        self._metrics.provider_latency.observe(time.perf_counter() - started)
        self._metrics.provider_responses.labels(code).inc()


def _described(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


def log_ids(message_id: str) -> dict[str, str]:
    """A log line's extra fields naming the message it is about."""
    return {"message_id": message_id}


async def _start_of_body(response: aiohttp.ClientResponse) -> str:
    """The start of the answer's body as text; at most MAX_ANSWER_BYTES of it are ever read."""
    body = bytearray()
    while len(body) < MAX_ANSWER_BYTES:
        chunk = await response.content.read(MAX_ANSWER_BYTES - len(body))
        if not chunk:
            break
        body += chunk
    # MAX_ERROR_CHARS characters take at most 4 bytes each.
    start = bytes(body[: 4 * MAX_ERROR_CHARS])
    try:
        return start.decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return start.decode("utf-8", errors="replace")
