"""Delivering messages: claim each, call the provider once, record what happened.

Two actors share this body. send_messages carries a batch of ids (every first attempt, as ingest,
the promoter and the sweeper enqueue them): Dramatiq's per-message work is paid once per batch,
and the batch's sends run concurrently. send_message carries one id (a retry, or a queue message
from before batches), so Dramatiq's Retries middleware and dead letters work as for any actor.
A batch's id that fails goes on as such a single send: its first retry is enqueued with the
backoff Retries would have chosen, or it is dead-lettered when it failed for good.

The actors are plain functions whose bodies run as coroutines on the worker process's event
loop (Dramatiq's AsyncIO middleware); a worker thread only waits there. The sends in flight
share one loop, one HTTP client and the batchers, and a semaphore bounds them to the worker's
thread count (--threads): one thread means one send at a time, in queue order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError

from herald.core import transitions
from herald.core.batching import AsyncBatcher
from herald.core.broker import dead_letter, enqueue_send, enqueue_sends
from herald.core.connections import AsyncDirectConnection
from herald.core.metrics import SenderMetrics
from herald.core.retries import RetryPolicy
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.transitions import Claimed
from herald.sender.provider import PermanentError, Provider, TransientError, log_ids

log = logging.getLogger(__name__)

DeliveryError = PermanentError | TransientError


class RetriesExhausted(PermanentError):
    """The last attempt allowed failed transiently: as final as a refusal, so no retry follows."""


# Most claims or outcomes one statement carries.
BATCH = 500


class Delivery:
    """The send actor's body, with its dependencies."""

    def __init__(
        self,
        settings: Settings,
        broker: RedisBroker,
        provider: Provider,
        metrics: SenderMetrics,
    ) -> None:
        self._policy = RetryPolicy.from_settings(settings)
        self._broker = broker
        self._provider = provider
        self._metrics = metrics
        self._slots = asyncio.Semaphore(settings.sender_threads)
        self._stopping = False
        # Every delivery claims and records through these: one UPDATE and one COMMIT for all
        # those that got there together (see herald.core.batching), each batcher on its own
        # connection, awaited on the loop (no thread per statement).
        self._connections = {
            name: AsyncDirectConnection(settings)
            for name in ("claims", "sent", Status.RETRYING.value, Status.FAILED.value)
        }
        self._claims: AsyncBatcher[str, Claimed | None] = AsyncBatcher(self._claim, BATCH, "claims")
        self._sent: AsyncBatcher[str, bool] = AsyncBatcher(self._mark_sent, BATCH, "sent")
        self._errors = {
            status: AsyncBatcher(partial(self._record_errors, status), BATCH, f"{status}-errors")
            for status in (Status.RETRYING, Status.FAILED)
        }

    async def _claim(self, message_ids: list[str]) -> list[Claimed | None]:
        won = await transitions.claim_many(self._connections["claims"], message_ids)
        # A duplicate queue message in the same batch: only the first of them gets the claim.
        return [won.pop(message_id, None) for message_id in message_ids]

    async def _mark_sent(self, message_ids: list[str]) -> list[bool]:
        moved = await transitions.mark_sent_many(self._connections["sent"], message_ids)
        return [message_id in moved for message_id in message_ids]

    async def _record_errors(self, target: Status, errors: list[tuple[str, str]]) -> list[bool]:
        connection = self._connections[target.value]
        moved = await transitions.record_errors(connection, target, errors)
        return [message_id in moved for message_id, _ in errors]

    def start(self, concurrency: int) -> None:
        """Allow this many sends in flight (the worker's thread count); before the first send."""
        self._slots = asyncio.Semaphore(concurrency)

    def stop(self) -> None:
        """The worker is stopping: batches start no more sends and hand the rest back."""
        self._stopping = True

    def send(self, message_id: str) -> None:
        """Deliver message_id at most once per claim; a duplicate or canceled message is a no-op."""
        _run(self._send(message_id))

    def send_batch(self, message_ids: list[str]) -> None:
        """send() for each id, concurrently; a failed id goes on as a single send."""
        _run(self._send_batch(message_ids))

    async def _send(self, message_id: str) -> None:
        async with self._slots:
            error = await self._attempt(message_id)
        if isinstance(error, PermanentError):
            # The actor throws it: Retries lets it pass, and the queue message is dead-lettered.
            raise error
        if error is not None:
            # Retry, unlike a plain exception, is not logged as a crash; Retries computes the
            # backoff unless the provider named a delay.
            raise dramatiq.Retry(str(error), delay=error.retry_after_ms)

    async def _send_batch(self, message_ids: list[str]) -> None:
        started = await asyncio.gather(*map(self._send_first, message_ids))
        pairs = zip(message_ids, started, strict=True)
        unstarted = [message_id for message_id, went in pairs if not went]
        if unstarted:
            # Enqueued again before this batch is acknowledged: if Redis fails, the batch raises
            # and stays unacknowledged, so Dramatiq delivers it again (sent ids are skipped).
            await asyncio.to_thread(enqueue_sends, self._broker, unstarted)
            log.info("stopping: %d sends of a batch handed back", len(unstarted))

    async def _send_first(self, message_id: str) -> bool:
        """One id of a batch; False when the worker stopped before its turn."""
        async with self._slots:
            if self._stopping:
                return False
            error = await self._attempt(message_id)
        if error is not None:
            await self._go_on_alone(message_id, error)
        return True

    async def _go_on_alone(self, message_id: str, error: DeliveryError) -> None:
        """A batch's failed id: its first retry as a single send, or its dead letter."""
        try:
            if isinstance(error, TransientError):  # not the last attempt (_after_transient)
                # What Retries would do after a single send's first failure.
                delay = self._policy.first_retry_delay_ms(error.retry_after_ms)
                await asyncio.to_thread(enqueue_send, self._broker, message_id, delay, retries=1)
            else:
                await asyncio.to_thread(dead_letter, self._broker, message_id)
        except RedisError as redis_error:
            # The row's status is recorded; the sweeper enqueues a retrying row again later.
            log.warning(
                "could not enqueue its follow-up: %s", redis_error, extra=log_ids(message_id)
            )

    async def _attempt(self, message_id: str) -> DeliveryError | None:
        """Claim, call the provider, record the outcome; the error, if the call failed."""
        claimed = await self._claims.submit(message_id)
        if claimed is None:
            log.info("skipped: not queued or retrying", extra=log_ids(message_id))
            self._metrics.sends.labels("skipped").inc()
            return None
        try:
            with self._metrics.in_flight.track_inprogress():
                await self._provider.deliver(claimed)
        except PermanentError as error:
            await self._fail(message_id, str(error))
            return error
        except TransientError as error:
            return await self._after_transient(claimed, error)
        if not await self._sent.submit(message_id):
            log.warning("sent lost to a concurrent change", extra=log_ids(message_id))
        log.debug("sent", extra=log_ids(message_id))
        self._metrics.sends.labels("sent").inc()
        latency = datetime.now(UTC) - claimed.created_at
        self._metrics.delivery_latency.observe(latency.total_seconds())
        return None

    async def _fail(self, message_id: str, error: str) -> None:
        log.warning("failed: %s", error, extra=log_ids(message_id))
        await self._record(Status.FAILED, message_id, error)
        self._metrics.sends.labels("failed").inc()
        self._metrics.dead_letters.inc()

    async def _after_transient(self, claimed: Claimed, error: TransientError) -> DeliveryError:
        """Record retrying; on the last attempt allowed, failed and a RetriesExhausted instead."""
        # The row counts the attempts, not the queue message: one the sweeper enqueued again
        # carries no retries, and counting those would start the budget over each time. Only
        # an operator's manual retry starts it over (Claimed.attempt).
        if self._policy.is_last(claimed.attempt):
            await self._fail(claimed.id, str(error))
            return RetriesExhausted(str(error))
        log.info("retrying: %s", error, extra=log_ids(claimed.id))
        await self._record(Status.RETRYING, claimed.id, str(error))
        self._metrics.sends.labels("retry").inc()
        return error

    async def _record(self, target: Status, message_id: str, error: str) -> None:
        if not await self._errors[target].submit((message_id, error)):
            log.warning("%s lost to a concurrent change", target, extra=log_ids(message_id))


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    loop = get_event_loop_thread()
    if loop is None:
        coroutine.close()
        raise RuntimeError("the sender's broker needs Dramatiq's AsyncIO middleware")
    loop.run_coroutine(coroutine)
