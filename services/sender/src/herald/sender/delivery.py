"""Delivering one message: claim it, call the provider once, record what happened.

The actor is a plain function, so Dramatiq's worker threads, Retries and dead letters work as
for any actor; its body is a coroutine run on the worker process's event loop (Dramatiq's
AsyncIO middleware). A worker thread only waits there: the calls in flight share one loop, one
HTTP client and the batchers, which costs far less CPU per message than a thread doing each.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import CurrentMessage
from sqlalchemy import Engine

from herald.core import transitions
from herald.core.batching import AsyncBatcher
from herald.core.metrics import SenderMetrics
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.transitions import Claimed
from herald.sender.provider import PermanentError, Provider, TransientError

log = logging.getLogger(__name__)


def _retries_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return 0 if message is None else int(message.options.get("retries", 0))


# Most claims or outcomes one statement carries.
BATCH = 500


def _ids(message_id: str) -> dict[str, str]:
    return {"message_id": message_id}


class Delivery:
    """The send actor's body, with its dependencies."""

    def __init__(
        self, settings: Settings, engine: Engine, provider: Provider, metrics: SenderMetrics
    ) -> None:
        self._max_retries = settings.max_retries
        self._engine = engine
        self._provider = provider
        self._metrics = metrics
        # Every delivery claims and records through these: one UPDATE and one COMMIT for all
        # those that got there together (see herald.core.batching).
        self._claims: AsyncBatcher[str, Claimed | None] = AsyncBatcher(self._claim, BATCH, "claims")
        self._sent: AsyncBatcher[str, bool] = AsyncBatcher(self._mark_sent, BATCH, "sent")
        self._errors = {
            status: AsyncBatcher(partial(self._record_errors, status), BATCH, f"{status}-errors")
            for status in (Status.RETRYING, Status.FAILED)
        }

    def _claim(self, message_ids: list[str]) -> list[Claimed | None]:
        with self._engine.begin() as conn:
            won = transitions.claim_many(conn, message_ids)
        # A duplicate queue message in the same batch: only the first of them gets the claim.
        return [won.pop(message_id, None) for message_id in message_ids]

    def _mark_sent(self, message_ids: list[str]) -> list[bool]:
        with self._engine.begin() as conn:
            moved = transitions.mark_sent_many(conn, message_ids)
        return [message_id in moved for message_id in message_ids]

    def _record_errors(self, target: Status, errors: list[tuple[str, str]]) -> list[bool]:
        with self._engine.begin() as conn:
            moved = transitions.record_errors(conn, target, errors)
        return [message_id in moved for message_id, _ in errors]

    def send(self, message_id: str) -> None:
        """Deliver message_id at most once per claim; a duplicate or canceled message is a no-op."""
        loop = get_event_loop_thread()
        if loop is None:
            raise RuntimeError("the sender's broker needs Dramatiq's AsyncIO middleware")
        # Read in the worker thread: the coroutine runs on the loop's thread, not in this context.
        loop.run_coroutine(self._send(message_id, _retries_so_far()))

    async def _send(self, message_id: str, retries: int) -> None:
        claimed = await self._claims.submit(message_id)
        if claimed is None:
            log.info("skipped: not queued or retrying", extra=_ids(message_id))
            self._metrics.sends.labels("skipped").inc()
            return
        try:
            with self._metrics.in_flight.track_inprogress():
                await self._provider.deliver(claimed)
        except PermanentError as error:
            await self._fail(message_id, str(error))
            raise
        except TransientError as error:
            await self._after_transient(message_id, retries, error)
        else:
            if not await self._sent.submit(message_id):
                log.warning("sent lost to a concurrent change", extra=_ids(message_id))
            log.debug("sent", extra=_ids(message_id))
            self._metrics.sends.labels("sent").inc()
            latency = datetime.now(UTC) - claimed.created_at
            self._metrics.delivery_latency.observe(latency.total_seconds())

    async def _fail(self, message_id: str, error: str) -> None:
        log.warning("failed: %s", error, extra=_ids(message_id))
        await self._record(Status.FAILED, message_id, error)
        self._metrics.sends.labels("failed").inc()
        self._metrics.dead_letters.inc()

    async def _after_transient(self, message_id: str, retries: int, error: TransientError) -> None:
        # The same rule as Dramatiq's Retries middleware, which dead-letters the queue message:
        # after max_retries retries the row is failed too, and never shows a retry that won't come.
        if retries >= self._max_retries:
            await self._fail(message_id, str(error))
        else:
            log.info("retrying: %s", error, extra=_ids(message_id))
            await self._record(Status.RETRYING, message_id, str(error))
            self._metrics.sends.labels("retry").inc()
        # Retry, unlike a plain exception, is not logged as a crash; Retries computes the backoff
        # unless the provider named a delay.
        raise dramatiq.Retry(str(error), delay=error.retry_after_ms)

    async def _record(self, target: Status, message_id: str, error: str) -> None:
        if not await self._errors[target].submit((message_id, error)):
            log.warning("%s lost to a concurrent change", target, extra=_ids(message_id))
