"""The sweeper on real PostgreSQL and Redis: promotion, lost and abandoned sends, one at a time."""

from datetime import UTC, datetime, timedelta

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, insert, select, text

from herald.core import idempotency
from herald.core.broker import SEND_QUEUE
from herald.core.db import make_engine
from herald.core.ids import new_id
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages
from herald.sender.sweeper import (
    LOCK_KEY,
    PROMOTE_EVERY,
    PURGE_BATCH,
    PURGE_BATCHES,
    Leadership,
    Sweeper,
)
from tests.queues import queued_ids
from tests.stack import wait_for


@pytest.fixture
def sweeper(settings: Settings, engine: Engine, broker: RedisBroker) -> Sweeper:
    tuned = settings.model_copy(update={"stuck_after": 30.0, "max_backoff_ms": 60_000})
    return Sweeper(tuned, engine, broker)


def _row(engine: Engine, status: Status, age_s: float = 0, send_at: datetime | None = None) -> str:
    message_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            insert(messages).values(
                id=message_id,
                destination="d",
                body="b",
                status=status,
                send_at=send_at,
                updated_at=datetime.now(UTC) - timedelta(seconds=age_s),
            )
        )
    return message_id


def _status(engine: Engine, message_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(select(messages.c.status).where(messages.c.id == message_id)).scalar()
        )


def test_due_scheduled_messages_are_queued_in_send_at_order(
    sweeper: Sweeper, engine: Engine, broker: RedisBroker
) -> None:
    now = datetime.now(UTC)
    second = _row(engine, Status.SCHEDULED, send_at=now - timedelta(seconds=1))
    first = _row(engine, Status.SCHEDULED, send_at=now - timedelta(seconds=5))
    future = _row(engine, Status.SCHEDULED, send_at=now + timedelta(days=10))
    assert sweeper.promote() == 2
    assert queued_ids(broker) == [first, second]
    assert (_status(engine, first), _status(engine, future)) == ("queued", "scheduled")
    assert sweeper.promote() == 0


def test_a_queued_row_no_queue_message_reached_is_enqueued_once_a_period(
    sweeper: Sweeper, engine: Engine, broker: RedisBroker
) -> None:
    lost = _row(engine, Status.QUEUED, age_s=120)
    fresh = _row(engine, Status.QUEUED, age_s=0)
    assert sweeper.sweep() == 1
    assert queued_ids(broker) == [lost]
    assert _status(engine, lost) == "queued"
    assert sweeper.sweep() == 0  # stamped: not again before another stuck_after
    assert fresh not in queued_ids(broker)


def test_a_retrying_row_is_left_to_its_backoff_first(sweeper: Sweeper, engine: Engine) -> None:
    waiting = _row(engine, Status.RETRYING, age_s=31)  # past stuck_after, within the backoff cap
    late = _row(engine, Status.RETRYING, age_s=31 + 60)
    assert sweeper.sweep() == 1
    assert _status(engine, waiting) == "retrying"
    assert _status(engine, late) == "retrying"


def test_an_abandoned_claim_goes_back_to_retrying_and_is_enqueued(
    sweeper: Sweeper, engine: Engine, broker: RedisBroker
) -> None:
    abandoned = _row(engine, Status.SENDING, age_s=120)
    in_flight = _row(engine, Status.SENDING, age_s=0)
    assert sweeper.sweep() == 1
    assert _status(engine, abandoned) == "retrying"
    assert _status(engine, in_flight) == "sending"
    assert queued_ids(broker) == [abandoned]


def test_stuck_rows_are_enqueued_in_acceptance_order(
    sweeper: Sweeper, engine: Engine, broker: RedisBroker
) -> None:
    ids = [_row(engine, Status.QUEUED, age_s=300 - i) for i in range(5)]
    ids += [_row(engine, Status.SENDING, age_s=600)]
    sweeper.sweep()
    assert queued_ids(broker) == ids


def test_terminal_rows_are_never_touched(sweeper: Sweeper, engine: Engine) -> None:
    for status in (Status.SENT, Status.FAILED, Status.CANCELED):
        _row(engine, status, age_s=10_000)
    assert sweeper.sweep() == 0


def test_only_one_sweeper_leads_and_another_takes_over_when_it_goes(settings: Settings) -> None:
    first, second = Leadership(settings), Leadership(settings)
    assert first.held()
    assert first.held()  # and keeps leading
    assert not second.held()
    first.release()  # its backend ends, and releases the lock, a moment after the close
    wait_for(second.held, 60, "the second to lead", interval=0.05)
    second.release()


def test_the_lock_goes_with_a_dead_leader_session(settings: Settings, engine: Engine) -> None:
    leader, other = Leadership(settings), Leadership(settings)
    assert leader.held()
    with engine.connect() as admin:
        admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND objid = :low AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"
            ),
            {"low": LOCK_KEY & 0xFFFFFFFF},
        )
    assert not leader.held()  # notices its session is gone
    wait_for(other.held, 60, "the other to lead", interval=0.05)
    other.release()


def test_a_silent_leader_loses_the_lock_to_another_pod(settings: Settings) -> None:
    # Frozen (SIGSTOP, a hung node) or cut off, a leader's socket stays open; its session must
    # end anyway, or no other pod leads until TCP keepalive gives up (about two hours).
    quick = settings.model_copy(update={"leader_timeout": 1.0})
    leader, other = Leadership(quick), Leadership(quick)
    try:
        assert leader.held()
        assert not other.held()
        # The leader says nothing (frozen, as far as PostgreSQL can tell) while the follower
        # keeps trying, as its cycle does every PROMOTE_EVERY seconds.
        wait_for(other.held, 60, "the follower to lead", interval=PROMOTE_EVERY)
        assert not leader.held()  # back, it finds its session ended and does not lead
    finally:
        leader.release()
        other.release()


def test_backlog_counts_queue_states_and_pending_statuses(
    engine: Engine, broker: RedisBroker, settings: Settings
) -> None:
    from herald.core.broker import enqueue_send
    from herald.sender.backlog import pending_counts, queue_depth

    for status in (Status.QUEUED, Status.QUEUED, Status.RETRYING, Status.SCHEDULED, Status.SENT):
        _row(engine, status)
    enqueue_send(broker, "a")
    enqueue_send(broker, "b")
    enqueue_send(broker, "c", delay_ms=60_000)
    depth = queue_depth(broker.client, settings.redis_namespace, SEND_QUEUE, 60)
    assert depth == {
        "waiting": 2, "delayed": 1, "dead": 0, "in_progress": 0, "lost": 0, "orphaned": 0
    }  # fmt: skip
    counts = pending_counts(engine)
    assert counts == {
        Status.SCHEDULED: 1, Status.QUEUED: 2, Status.RETRYING: 1, Status.SENDING: 0
    }  # fmt: skip


def test_queue_depth_counts_every_id_of_a_batch(broker: RedisBroker, settings: Settings) -> None:
    from herald.core.broker import SEND_BATCH_MAX, dead_letter, enqueue_sends
    from herald.sender.backlog import queue_depth

    ids = [f"m{i}" for i in range(SEND_BATCH_MAX + 6)]
    enqueue_sends(broker, ids)
    dead_letter(broker, "gone")
    assert broker.client.llen(f"{settings.redis_namespace}:{SEND_QUEUE}") == 2
    assert queued_ids(broker) == ids
    depth = queue_depth(broker.client, settings.redis_namespace, SEND_QUEUE, 60)
    assert (depth["waiting"], depth["dead"]) == (len(ids), 1)


def test_ids_held_counts_a_set_and_a_long_list_by_pages(broker: RedisBroker) -> None:
    from herald.core.broker import ids_held

    held = f"{broker.namespace}:held"
    broker.client.sadd(held, "x.5", "y", "z.12")
    assert ids_held(broker.client, held, "set") == 18
    backlog = f"{broker.namespace}:backlog"
    broker.client.rpush(backlog, *[f"r{i}.2" for i in range(25_000)], "plain")
    assert ids_held(broker.client, backlog) == 50_001


def test_expired_idempotency_keys_are_forgotten(sweeper: Sweeper, engine: Engine) -> None:
    _keys(engine, expired=1, fresh=1)
    assert sweeper.purge() == 1
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT key FROM idempotency_keys")).scalars().all()
    assert keys == ["k2"]


def test_the_stuck_scan_uses_the_partial_index_at_scale(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO messages (id, destination, body, status, updated_at) "
                "SELECT 'x' || lpad(g::text, 21, '0'), 'd', 'b', 'sent', now() - interval '1 day' "
                "FROM generate_series(1, 50000) g"
            )
        )
        conn.execute(text("ANALYZE messages"))
        plan = (
            conn.execute(
                text(
                    "EXPLAIN SELECT id FROM messages WHERE status IN ('queued') "
                    "AND updated_at < now() - interval '60 seconds' ORDER BY updated_at LIMIT 1000"
                )
            )
            .scalars()
            .all()
        )
    assert "messages_pending_by_updated" in "\n".join(plan)


def test_a_backlog_whose_messages_wait_in_redis_is_not_enqueued_twice(
    sweeper: Sweeper, engine: Engine, broker: RedisBroker
) -> None:
    from herald.core.broker import enqueue_sends

    waiting = [_row(engine, Status.QUEUED, age_s=600) for _ in range(3)]  # one batch message
    enqueue_sends(broker, waiting)
    assert sweeper.sweep() == 0
    assert queued_ids(broker) == waiting
    _row(engine, Status.QUEUED, age_s=600)  # one more row, whose message never came
    # Redis now holds one message fewer than the rows: one (oldest) row is enqueued again. If
    # that was not the lost one, the count is even until the backlog drains, then it is.
    assert sweeper.sweep() == 1
    assert len(queued_ids(broker)) == 4


def test_an_expired_key_goes_without_another_tenants_live_one_of_the_same_name(
    sweeper: Sweeper, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE idempotency_keys"))
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (tenant, key, message_id, fingerprint, created_at) "
                "VALUES ('a', 'k', 'x', 'f', now() - interval '25 hours'), "
                "('b', 'k', 'y', 'f', now())"
            )
        )
    assert sweeper.purge() == 1
    with engine.connect() as conn:
        left = conn.execute(text("SELECT tenant, key FROM idempotency_keys")).all()
    assert [tuple(row) for row in left] == [("b", "k")]


def _keys(engine: Engine, expired: int, fresh: int = 0) -> None:
    """Only these idempotency keys: k1.. past the 24-hour window (k1 newest), then fresh ones."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE idempotency_keys"))
        conn.execute(text("SET LOCAL statement_timeout = 0"))  # a big setup on a busy machine
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (key, message_id, fingerprint, created_at) "
                "SELECT 'k' || g, 'm', 'f', CASE WHEN g <= :expired "
                "THEN now() - interval '25 hours' - g * interval '1 ms' ELSE now() END "
                "FROM generate_series(1, :expired + :fresh) g"
            ),
            {"expired": expired, "fresh": fresh},
        )


def test_recovery_commits_however_many_expired_keys_await_their_purge(
    settings: Settings, engine: Engine, broker: RedisBroker
) -> None:
    # A day of heavy keyed traffic leaves more expired keys than one statement may delete
    # within its timeout; that must never roll the recovery of lost sends back with it.
    # Measured on an idle machine: one DELETE of 600k keys ~180 ms, so a 100 ms statement
    # timeout fails it whatever the load; the sweep itself no longer deletes any.
    _keys(engine, expired=600_000)
    lost = _row(engine, Status.QUEUED, age_s=120)
    tight = make_engine(settings, pool_size=1, statement_timeout_ms=100)
    try:
        sweeper = Sweeper(settings.model_copy(update={"stuck_after": 30.0}), tight, broker)
        assert sweeper.sweep() == 1
        assert queued_ids(broker) == [lost]
    finally:
        tight.dispose()
    # The purge goes apart, a small batch per transaction, at most PURGE_BATCHES per cycle.
    assert Sweeper(settings, engine, broker).purge() == PURGE_BATCH * PURGE_BATCHES
    with engine.begin() as conn:
        assert idempotency.purge_expired(conn, 10) == 10  # a batch never exceeds its limit
        left = conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar()
    assert left == 600_000 - PURGE_BATCH * PURGE_BATCHES - 10


def test_a_batch_dramatiq_enqueues_again_still_counts_every_id(
    broker: RedisBroker, settings: Settings
) -> None:
    # Retries re-enqueues a whole failed batch (PostgreSQL down before its claims) with a fresh
    # Redis message id: the backlog must still see all its ids, not one.
    from dramatiq import Message

    from herald.core.broker import SEND_BATCH_ACTOR, SEND_BATCH_MAX
    from herald.sender.backlog import queue_depth

    ids = [f"m{i}" for i in range(SEND_BATCH_MAX)]
    batch: Message[None] = Message(
        queue_name=SEND_QUEUE, actor_name=SEND_BATCH_ACTOR, args=(ids,), kwargs={}, options={}
    )
    broker.enqueue(batch, delay=60_000)
    broker.enqueue(batch)
    depth = queue_depth(broker.client, settings.redis_namespace, SEND_QUEUE, 60)
    assert (depth["delayed"], depth["waiting"]) == (SEND_BATCH_MAX, SEND_BATCH_MAX)


def test_a_retry_a_live_worker_dropped_from_its_delay_queue_is_swept(
    settings: Settings, engine: Engine, broker: RedisBroker
) -> None:
    # Dramatiq empties a worker's in-memory delay queue on a Redis connection error, while the
    # retry's entry stays in that live worker's ack set: no consumer will ever deliver it.
    from herald.core.broker import enqueue_send
    from herald.sender.backlog import queue_depth

    quick = settings.model_copy(update={"stuck_after": 0.5, "max_backoff_ms": 500})
    retrying = _row(engine, Status.RETRYING, age_s=10)
    enqueue_send(broker, retrying, delay_ms=1, retries=1)
    delays = broker.consume(f"{SEND_QUEUE}.DQ", prefetch=10)
    try:
        held = next(delays)  # now in this live worker's memory and its ack set only
        assert held is not None
        assert held.options["eta"] > 0

        # Dropped: never forwarded, never acknowledged. Past its eta by more than stuck_after:
        def lost() -> dict[str, int] | None:
            depth = queue_depth(broker.client, settings.redis_namespace, SEND_QUEUE, 0.5)
            return depth if depth["lost"] else None

        depth = wait_for(lost, 60, "the dropped retry to count as lost")
        assert (depth["delayed"], depth["lost"]) == (0, 1)
        assert Sweeper(quick, engine, broker).sweep() == 1
        assert queued_ids(broker) == [retrying]
    finally:
        delays.close()


def test_acks_a_consumer_could_not_send_go_with_the_next_one(broker: RedisBroker) -> None:
    # After a Redis error Dramatiq replaces its consumer: the acks the old one had noted must
    # not vanish with it, or their messages stay in this live worker's ack set for good.
    from herald.core.broker import enqueue_sends
    from herald.sender.backlog import queue_depth

    enqueue_sends(broker, ["a"])
    first = broker.consume(SEND_QUEUE, prefetch=1)
    message = next(first)
    assert message is not None
    first.ack(message)  # noted, not yet sent; the consumer is then dropped without closing
    depth = queue_depth(broker.client, broker.namespace, SEND_QUEUE, 60)
    assert depth["in_progress"] == 1
    second = broker.consume(SEND_QUEUE, prefetch=1)
    try:
        assert next(second) is None
    finally:
        second.close()
    depth = queue_depth(broker.client, broker.namespace, SEND_QUEUE, 60)
    assert depth["in_progress"] == 0
