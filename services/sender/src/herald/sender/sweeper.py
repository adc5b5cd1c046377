"""The sweeper: brings due scheduled messages to the queue and re-enqueues stuck ones.

It also forgets idempotency keys older than their 24-hour window.

It runs inside the sender deployable, as a Dramatiq fork process next to the workers (one per
sender pod), because it needs exactly what the sender has: the database, the broker and the
retry policy. Every sender replica runs one, but only the one holding a PostgreSQL session
advisory lock works (its row picks use FOR UPDATE SKIP LOCKED besides); the others wait to
take over. The leader also exports the backlog gauges (see backlog.py).
Enqueueing again is always safe: a claim (transitions.claim_many) lets exactly one delivery of a
message send it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError
from sqlalchemy import Engine

from herald.core import idempotency, transitions
from herald.core.broker import SEND_QUEUE, enqueue_sends, make_broker
from herald.core.db import DatabaseUnavailable, make_engine, session_settings, watched_conninfo
from herald.core.lifetime import stop_event
from herald.core.logs import configure_logging
from herald.core.metrics import BacklogMetrics, backlog_metrics
from herald.core.retries import RetryPolicy
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.sender import backlog

log = logging.getLogger(__name__)

LOCK_KEY = 0x6865_7261_6C64_0001  # "herald" + 1: the sweepers' leadership lock
BATCH = 1_000
# How often due scheduled messages are promoted: they go out within 2 s of send_at.
PROMOTE_EVERY = 0.25
# Expired idempotency keys deleted per transaction, and transactions per sweep.
PURGE_BATCH = 1_000
PURGE_BATCHES = 20


class Leadership:
    """A session-level advisory lock on a connection of its own: whoever holds it, leads.

    If the leader dies or loses PostgreSQL, its session ends and the lock with it; another
    sender pod's sweeper takes over at its next try. A leader that is frozen (SIGSTOP, a hung
    node) or cut off by the network keeps its socket open, so its session is set to end
    after HERALD_LEADER_TIMEOUT seconds of silence (herald.core.db.watched_conninfo): the
    leader touches it every cycle, a silent one loses it.
    """

    def __init__(self, settings: Settings) -> None:
        # The lock lasts as long as its session: a connection of its own, never a pooler's.
        self._conninfo = watched_conninfo(session_settings(settings), settings.leader_timeout)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._leading = False

    def held(self) -> bool:
        """Whether this process leads now (trying to become leader if it does not)."""
        try:
            if self._conn is None:
                self._conn, self._leading = psycopg.connect(self._conninfo, autocommit=True), False
            if self._leading:
                self._conn.execute("SELECT 1")  # the session, and so the lock, is alive
            else:
                # On the same session every time: a follower costs PostgreSQL one idle
                # connection, not a new backend four times a second.
                won = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
                self._leading = bool(won and won[0])
            return self._leading
        except psycopg.Error:
            self.release()
            return False

    def release(self) -> None:
        """Give up the lock (if held): its session is closed, and the lock goes with it."""
        if self._conn is not None:
            self._conn.close()
            self._conn, self._leading = None, False


class Sweeper:
    """One promotion or sweep per call; only the leader calls them."""

    def __init__(self, settings: Settings, engine: Engine, broker: RedisBroker) -> None:
        self._settings = settings
        self._policy = RetryPolicy.from_settings(settings)
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
        depth = backlog.queue_depth(
            self._broker.client, self._broker.namespace, SEND_QUEUE, self._settings.stuck_after
        )
        counts = backlog.pending_counts(self._engine)
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
                late = self._policy.retry_lost_after_s(s.stuck_after)
                lost += transitions.touch_unsent(conn, (Status.RETRYING,), late, limit)
            # A claim older than any provider call can last: its worker is gone.
            dead = s.stuck_after + s.provider_timeout
            abandoned = transitions.release_abandoned(conn, dead, BATCH)
        stuck = sorted(lost + abandoned)  # id order is acceptance order
        if stuck:
            log.warning(
                "sweeper: %d lost and %d abandoned sends enqueued again", len(lost), len(abandoned)
            )
        self._enqueue(stuck)
        return len(stuck)

    def measure(self, metrics: BacklogMetrics) -> dict[str, int]:
        """Set the backlog gauges (see backlog.py); the send queue's depth."""
        client, namespace = self._broker.client, self._broker.namespace
        return backlog.measure(metrics, client, namespace, self._engine, self._settings.stuck_after)

    def purge(self) -> int:
        """Forget expired idempotency keys, a small batch per transaction; how many.

        Apart from recovery: at millions of keyed posts a day one DELETE of a day's keys could
        outlast the statement timeout and roll the sweep back with it, every cycle. At most
        PURGE_BATCHES batches a cycle, so the leader's cycle, and its lock, stay responsive.
        """
        purged = 0
        for _ in range(PURGE_BATCHES):
            with self._engine.begin() as conn:
                deleted = idempotency.purge_expired(conn, PURGE_BATCH)
            purged += deleted
            if deleted < PURGE_BATCH:
                break
        return purged

    def _enqueue(self, ids: list[str]) -> None:
        # Rows are committed first; if Redis fails here, the next sweep finds them again.
        enqueue_sends(self._broker, ids)


def run() -> None:
    """Dramatiq fork function: lead (or wait to), promote, sweep and measure until SIGTERM."""
    settings = Settings()
    configure_logging(settings, "sweeper")
    engine = make_engine(settings, pool_size=1)
    broker = make_broker(settings)
    leadership = Leadership(settings)
    cycle = Cycle(settings, leadership, Sweeper(settings, engine, broker))
    # Stop between cycles, not by Dramatiq's SystemExit in the middle of one: rows promoted
    # but not yet enqueued would wait for a sweep past HERALD_STUCK_AFTER.
    stop = stop_event()
    try:
        while not stop.is_set():
            if not cycle.run():
                stop.wait(PROMOTE_EVERY)
    finally:
        leadership.release()
        engine.dispose()
        broker.close()
    log.info("sweeper: stopped")


class Cycle:
    """One turn of the sweeper process: lead or not, then promote, sweep, measure, purge."""

    def __init__(self, settings: Settings, leadership: Leadership, sweeper: Sweeper) -> None:
        self._settings = settings
        self._leadership = leadership
        self._sweeper = sweeper
        self._metrics = backlog_metrics()
        self._next_sweep = 0.0

    def run(self) -> bool:
        """One turn; whether there is more to do at once (a full batch was just handled)."""
        try:
            leading = self._leadership.held()
            self._metrics.leading.set(1 if leading else 0)
            if not leading:
                backlog.forget(self._metrics)  # only the leader's figures count
                return False
            return self._lead()
        except (*DatabaseUnavailable, RedisError) as error:
            log.warning("sweeper: %s; trying again", type(error).__name__)
        except Exception:
            # Dramatiq never notices a fork process that died: a sweeper that stopped here
            # would leave its pod running without promotion, recovery or backlog figures.
            log.exception("sweeper: cycle failed; trying again")
        backlog.forget(self._metrics)  # figures no longer measured would freeze the HPA
        return False

    def _lead(self) -> bool:
        sweeper, s = self._sweeper, self._settings
        busy = sweeper.promote() == BATCH
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + s.sweep_interval
            busy = sweeper.sweep() == BATCH or busy
            log.debug("sweeper: queue depth %s", sweeper.measure(self._metrics))
            sweeper.purge()
        return busy
