"""The sweeper: brings due scheduled messages to the queue and re-enqueues stuck ones.

It also forgets idempotency keys older than their 24-hour window.

It runs inside the sender deployable, as a Dramatiq fork process next to the workers (one per
sender pod), because it needs exactly what the sender has: the database, the broker and the
retry policy. Every sender replica runs one; each cycle takes a PostgreSQL advisory lock, so one
cycle runs at a time across replicas, and its row picks use FOR UPDATE SKIP LOCKED besides.
Enqueueing again is always safe: claim() lets exactly one delivery of a message send it.
"""

from __future__ import annotations

import logging
import time

import dramatiq
from redis.exceptions import RedisError
from sqlalchemy import Connection, Engine, text

from herald.core import idempotency, transitions
from herald.core.broker import enqueue_send, make_broker
from herald.core.db import DatabaseUnavailable, make_engine
from herald.core.settings import Settings
from herald.core.statuses import Status

log = logging.getLogger(__name__)

LOCK_KEY = 0x6865_7261_6C64_0001  # "herald" + 1: the sweeper's advisory lock
BATCH = 1_000
# How often due scheduled messages are promoted: they go out within 2 s of send_at.
PROMOTE_EVERY = 0.25


def _locked(conn: Connection) -> bool:
    held = conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    return bool(held.scalar())


class Sweeper:
    """One sweep or promotion per call; run() calls them forever."""

    def __init__(self, settings: Settings, engine: Engine, broker: dramatiq.Broker) -> None:
        self._settings = settings
        self._engine = engine
        self._broker = broker

    def promote(self) -> int:
        """Queue and enqueue scheduled messages whose time has come; how many."""
        with self._engine.begin() as conn:
            due = transitions.promote_due(conn, BATCH) if _locked(conn) else []
        self._enqueue(due)
        return len(due)

    def sweep(self) -> int:
        """Enqueue again what no queue message will deliver: lost enqueues, dead workers."""
        s = self._settings
        with self._engine.begin() as conn:
            if not _locked(conn):
                return 0
            lost = transitions.touch_unsent(conn, (Status.QUEUED,), s.stuck_after, BATCH)
            # A retrying row legitimately waits out its backoff first.
            late = s.stuck_after + s.max_backoff_ms / 1000
            lost += transitions.touch_unsent(conn, (Status.RETRYING,), late, BATCH)
            # A claim older than any provider call can last: its worker is gone.
            dead = s.stuck_after + s.provider_timeout
            abandoned = transitions.release_abandoned(conn, dead, BATCH)
            idempotency.purge_expired(conn)
        stuck = sorted(lost + abandoned)  # id order is acceptance order
        if stuck:
            log.warning("sweeper: %d lost and %d abandoned sends enqueued again",
                        len(lost), len(abandoned))  # fmt: skip
        self._enqueue(stuck)
        return len(stuck)

    def _enqueue(self, ids: list[str]) -> None:
        # Rows are committed first; if Redis fails here, the next sweep finds them again.
        for message_id in ids:
            enqueue_send(self._broker, message_id)


def run() -> None:
    """Dramatiq fork function: promote and sweep until the sender stops."""
    settings = Settings()
    sweeper = Sweeper(settings, make_engine(settings, pool_size=1), make_broker(settings))
    next_sweep = 0.0
    while True:
        try:
            busy = sweeper.promote() == BATCH
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + settings.sweep_interval
                busy = sweeper.sweep() == BATCH or busy
        except (*DatabaseUnavailable, RedisError) as error:
            log.warning("sweeper: %s; trying again", type(error).__name__)
            busy = False
        if not busy:
            time.sleep(PROMOTE_EVERY)
