"""Delivering one message: claim it, call the provider once, record what happened."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dramatiq
from dramatiq.middleware import CurrentMessage
from sqlalchemy import Engine

from herald.core import transitions
from herald.core.metrics import SenderMetrics
from herald.core.settings import Settings
from herald.sender.provider import PermanentError, Provider, TransientError

log = logging.getLogger(__name__)


def _retries_so_far() -> int:
    message = CurrentMessage.get_current_message()
    return 0 if message is None else int(message.options.get("retries", 0))


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

    def send(self, message_id: str) -> None:
        """Deliver message_id at most once per claim; a duplicate or canceled message is a no-op."""
        with self._engine.begin() as conn:
            claimed = transitions.claim(conn, message_id)
        if claimed is None:
            log.info("skipped: not queued or retrying", extra=_ids(message_id))
            self._metrics.sends.labels("skipped").inc()
            return
        try:
            with self._metrics.in_flight.track_inprogress():
                self._provider.deliver(claimed)
        except PermanentError as error:
            self._fail(message_id, str(error))
            raise
        except TransientError as error:
            self._after_transient(message_id, error)
        else:
            self._record(transitions.mark_sent, message_id)
            log.debug("sent", extra=_ids(message_id))
            self._metrics.sends.labels("sent").inc()
            latency = datetime.now(UTC) - claimed.created_at
            self._metrics.delivery_latency.observe(latency.total_seconds())

    def _fail(self, message_id: str, error: str) -> None:
        log.warning("failed: %s", error, extra=_ids(message_id))
        self._record(transitions.mark_failed, message_id, error)
        self._metrics.sends.labels("failed").inc()
        self._metrics.dead_letters.inc()

    def _after_transient(self, message_id: str, error: TransientError) -> None:
        # The same rule as Dramatiq's Retries middleware, which dead-letters the queue message:
        # after max_retries retries the row is failed too, and never shows a retry that won't come.
        if _retries_so_far() >= self._max_retries:
            self._fail(message_id, str(error))
        else:
            log.info("retrying: %s", error, extra=_ids(message_id))
            self._record(transitions.mark_retrying, message_id, str(error))
            self._metrics.sends.labels("retry").inc()
        # Retry, unlike a plain exception, is not logged as a crash; Retries computes the backoff
        # unless the provider named a delay.
        raise dramatiq.Retry(str(error), delay=error.retry_after_ms)

    def _record(self, transition: transitions.Transition, message_id: str, *args: str) -> None:
        with self._engine.begin() as conn:
            if not transition(conn, message_id, *args):
                log.warning(
                    "%s lost to a concurrent change", transition.__name__, extra=_ids(message_id)
                )
