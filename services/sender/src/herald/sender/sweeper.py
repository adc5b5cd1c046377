"""The sweeper: brings due scheduled messages to the queue and re-enqueues stuck ones.

It also forgets idempotency keys older than their 24-hour window.

It runs inside the sender deployable, as a Dramatiq fork process next to the workers (one per
sender pod), because it needs exactly what the sender has: the database, the broker and the
retry policy. Every sender replica runs one, but only the one holding a PostgreSQL session
advisory lock works (its row picks use FOR UPDATE SKIP LOCKED besides); the others wait to
take over. The leader also exports the backlog gauges (see backlog.py).
Enqueueing again is always safe: claim() lets exactly one delivery of a message send it.
"""

from __future__ import annotations

import logging
import time

from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine, text

from herald.core import idempotency, transitions
from herald.core.broker import SEND_QUEUE, enqueue_sends, make_broker
from herald.core.db import DatabaseUnavailable, make_engine
from herald.core.logs import configure_logging
from herald.core.metrics import backlog_metrics
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.sender.backlog import measure, pending_counts, queue_depth

log = logging.getLogger(__name__)

LOCK_KEY = 0x6865_7261_6C64_0001  # "herald" + 1: the sweepers' leadership lock
BATCH = 1_000
# How often due scheduled messages are promoted: they go out within 2 s of send_at.
PROMOTE_EVERY = 0.25


class Leadership:
    """A session-level advisory lock on a connection of its own: whoever holds it, leads.

    If the leader dies or loses PostgreSQL, its session ends and the lock with it; another
    sender pod's sweeper takes over at its next try.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def held(self) -> bool:
        """Whether this process leads now (trying to become leader if it does not)."""
        try:
            if self._conn is None:
                conn = self._engine.connect()
                won = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY})
                if not won.scalar():
                    conn.close()
                    return False
                self._conn = conn
            else:
                self._conn.execute(text("SELECT 1"))  # the session, and so the lock, is alive
            self._conn.commit()
            return True
        except DatabaseUnavailable:
            self.release()
            return False

    def release(self) -> None:
        """Give up the lock: the connection is discarded, never returned to the pool locked."""
        if self._conn is not None:
            self._conn.invalidate()
            self._conn.close()
            self._conn = None


class Sweeper:
    """One promotion or sweep per call; only the leader calls them."""

    def __init__(self, settings: Settings, engine: Engine, broker: RedisBroker) -> None:
        self._settings = settings
        self._engine = engine
        self._broker = broker

    def promote(self) -> int:
        """Queue and enqueue scheduled messages whose time has come; how many."""
        with self._engine.begin() as conn:
            due = transitions.promote_due(conn, BATCH)
        self._enqueue(due)
        return len(due)

    def unaccounted(self) -> int:
        """How many queued or retrying rows have no message waiting in Redis.

        In a long backlog every old queued row still has its message waiting; enqueueing it
        again would only add work. Rows lose their messages when Redis does (a restart
        without persistence, a lost enqueue), and then Redis holds fewer than the rows.
        Messages a worker has fetched do not count: a killed worker's, or those a worker
        dropped from its prefetch when its Redis connection broke, would never be sent. So
        the ids of up to a prefetch's worth of queue messages (a batch carries up to
        SEND_BATCH_MAX) may be enqueued twice, at most BATCH per sweep; a claim turns the second
        copy away, and none is ever left behind. Every count is in ids, not queue messages.
        """
        depth = queue_depth(self._broker.client, self._broker.namespace, SEND_QUEUE)
        counts = pending_counts(self._engine)
        held = depth["waiting"] + depth["delayed"]
        return counts[Status.QUEUED] + counts[Status.RETRYING] - held

    def sweep(self) -> int:
        """Enqueue again what no queue message will deliver: lost enqueues, dead workers."""
        s = self._settings
        limit = min(BATCH, self.unaccounted())
        with self._engine.begin() as conn:
            lost: list[str] = []
            if limit > 0:
                lost = transitions.touch_unsent(conn, (Status.QUEUED,), s.stuck_after, limit)
                # A retrying row legitimately waits out its backoff first.
                late = s.stuck_after + s.max_backoff_ms / 1000
                lost += transitions.touch_unsent(conn, (Status.RETRYING,), late, limit)
            # A claim older than any provider call can last: its worker is gone.
            dead = s.stuck_after + s.provider_timeout
            abandoned = transitions.release_abandoned(conn, dead, BATCH)
            idempotency.purge_expired(conn)
        stuck = sorted(lost + abandoned)  # id order is acceptance order
        if stuck:
            log.warning(
                "sweeper: %d lost and %d abandoned sends enqueued again", len(lost), len(abandoned)
            )
        self._enqueue(stuck)
        return len(stuck)

    def _enqueue(self, ids: list[str]) -> None:
        # Rows are committed first; if Redis fails here, the next sweep finds them again.
        enqueue_sends(self._broker, ids)


def run() -> None:
    """Dramatiq fork function: lead (or wait to), promote, sweep and measure until stopped."""
    settings = Settings()
    configure_logging(settings, "sweeper")
    engine = make_engine(settings, pool_size=2)
    broker = make_broker(settings)
    leadership, sweeper, metrics = (
        Leadership(engine),
        Sweeper(settings, engine, broker),
        backlog_metrics(),
    )
    next_sweep = 0.0
    while True:
        busy = False
        try:
            if leadership.held():
                busy = sweeper.promote() == BATCH
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + settings.sweep_interval
                    busy = sweeper.sweep() == BATCH or busy
                    measure(metrics, broker.client, settings.redis_namespace, engine)
        except (*DatabaseUnavailable, RedisError) as error:
            log.warning("sweeper: %s; trying again", type(error).__name__)
        if not busy:
            time.sleep(PROMOTE_EVERY)
