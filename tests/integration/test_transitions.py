"""Every status change against the real PostgreSQL: who wins, and that nothing goes backwards."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select, text

from herald.core import transitions
from herald.core.ids import new_id
from herald.core.statuses import Status
from herald.core.tables import messages


def _row(engine: Engine, status: Status) -> str:
    message_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            insert(messages).values(id=message_id, destination="d", body="b", status=status)
        )
    return message_id


def _status(engine: Engine, message_id: str) -> tuple[str, int, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(messages.c.status, messages.c.attempts, messages.c.last_error).where(
                messages.c.id == message_id
            )
        ).one()
    return row.status, row.attempts, row.last_error


def test_claim_moves_queued_to_sending_and_counts_the_attempt(engine: Engine) -> None:
    message_id = _row(engine, Status.QUEUED)
    with engine.begin() as conn:
        claimed = transitions.claim(conn, message_id)
    assert claimed is not None
    assert (claimed.destination, claimed.body, claimed.attempts) == ("d", "b", 1)
    assert _status(engine, message_id) == ("sending", 1, None)


def test_second_claim_returns_none(engine: Engine) -> None:
    message_id = _row(engine, Status.QUEUED)
    with engine.begin() as conn:
        assert transitions.claim(conn, message_id) is not None
    with engine.begin() as conn:
        assert transitions.claim(conn, message_id) is None


def test_concurrent_claims_have_exactly_one_winner(engine: Engine) -> None:
    message_id = _row(engine, Status.QUEUED)

    def attempt(_: int) -> bool:
        with engine.begin() as conn:
            return transitions.claim(conn, message_id) is not None

    with ThreadPoolExecutor(4) as pool:
        wins = list(pool.map(attempt, range(4)))
    assert wins.count(True) == 1


def test_retrying_message_can_be_claimed_again(engine: Engine) -> None:
    message_id = _row(engine, Status.RETRYING)
    with engine.begin() as conn:
        assert transitions.claim(conn, message_id) is not None


@pytest.mark.parametrize(
    "status", [Status.SCHEDULED, Status.SENDING, Status.SENT, Status.FAILED, Status.CANCELED]
)
def test_only_queued_or_retrying_can_be_claimed(engine: Engine, status: Status) -> None:
    message_id = _row(engine, status)
    with engine.begin() as conn:
        assert transitions.claim(conn, message_id) is None
    assert _status(engine, message_id)[0] == status


def test_mark_sent_records_sent_at_and_clears_the_error(engine: Engine) -> None:
    message_id = _row(engine, Status.SENDING)
    with engine.begin() as conn:
        assert transitions.mark_sent(conn, message_id)
    with engine.connect() as conn:
        sent_at = conn.execute(select(messages.c.sent_at).where(messages.c.id == message_id))
        assert sent_at.scalar() is not None


@pytest.mark.parametrize(
    ("transition", "target"),
    [(transitions.mark_retrying, "retrying"), (transitions.mark_failed, "failed")],
)
def test_failures_record_last_error(
    engine: Engine, transition: Callable[..., bool], target: str
) -> None:
    message_id = _row(engine, Status.SENDING)
    with engine.begin() as conn:
        assert transition(conn, message_id, "HTTP 503")
    assert _status(engine, message_id) == (target, 0, "HTTP 503")


def test_a_sent_message_never_moves_backwards(engine: Engine) -> None:
    message_id = _row(engine, Status.SENT)
    with engine.begin() as conn:
        assert not transitions.mark_retrying(conn, message_id, "late")
        assert not transitions.mark_failed(conn, message_id, "late")
        assert not transitions.cancel(conn, message_id)
        assert not transitions.requeue_failed(conn, message_id)
    assert _status(engine, message_id)[0] == "sent"


@pytest.mark.parametrize(
    ("status", "allowed"),
    [(Status.SCHEDULED, True), (Status.QUEUED, True), (Status.SENDING, False),
     (Status.RETRYING, False), (Status.SENT, False), (Status.FAILED, False)],
)  # fmt: skip
def test_cancel_only_before_a_sender_claims(engine: Engine, status: Status, allowed: bool) -> None:
    message_id = _row(engine, status)
    with engine.begin() as conn:
        assert transitions.cancel(conn, message_id) is allowed


def test_manual_retry_requeues_only_failed(engine: Engine) -> None:
    failed, sent = _row(engine, Status.FAILED), _row(engine, Status.SENT)
    with engine.begin() as conn:
        assert transitions.requeue_failed(conn, failed)
        assert not transitions.requeue_failed(conn, sent)
    assert _status(engine, failed)[0] == "queued"


def test_promote_moves_scheduled_to_queued(engine: Engine) -> None:
    message_id = _row(engine, Status.SCHEDULED)
    with engine.begin() as conn:
        assert transitions.promote(conn, message_id)
        assert not transitions.promote(conn, message_id)


def test_unknown_id_moves_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        assert transitions.claim(conn, new_id()) is None
        assert not transitions.cancel(conn, new_id())


def test_status_column_rejects_unknown_statuses(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(messages).values(id=new_id(), destination="d", body="b", status="lost"))


def test_errors_are_recorded_in_one_statement_each_with_its_own_text(engine: Engine) -> None:
    first, second = _row(engine, Status.SENDING), _row(engine, Status.SENDING)
    done = _row(engine, Status.SENT)
    with engine.begin() as conn:
        moved = transitions.record_errors(
            conn, Status.RETRYING, [(first, "HTTP 503"), (second, "timeout"), (done, "late")]
        )
    assert moved == {first, second}
    assert _status(engine, first) == ("retrying", 0, "HTTP 503")
    assert _status(engine, second) == ("retrying", 0, "timeout")
    assert _status(engine, done)[0] == "sent"


def test_many_claims_and_sends_move_only_eligible_rows(engine: Engine) -> None:
    queued, retrying = _row(engine, Status.QUEUED), _row(engine, Status.RETRYING)
    canceled = _row(engine, Status.CANCELED)
    with engine.begin() as conn:
        won = transitions.claim_many(conn, [queued, retrying, canceled, queued])
    assert set(won) == {queued, retrying}
    with engine.begin() as conn:
        assert transitions.mark_sent_many(conn, [queued, canceled]) == {queued}


def _insert_many(engine: Engine, status: Status, count: int) -> list[str]:
    ids = [new_id() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(messages),
            [{"id": i, "destination": "d", "body": "b", "status": status} for i in ids],
        )
    return ids


def test_transitions_by_id_use_the_primary_key_even_when_statistics_predate_a_burst(
    engine: Engine,
) -> None:
    # The planner last looked when nothing was queued; then a burst arrived (autovacuum has
    # not analyzed it yet, or is off): it believes queued rows rare.
    _insert_many(engine, Status.SENT, 3000)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE messages"))
        conn.commit()
    burst = _insert_many(engine, Status.QUEUED, 3000)
    statements: list[tuple[str, Any]] = []
    with engine.connect() as conn:

        def capture(*args: Any) -> None:
            statement, parameters = args[2], args[3]
            if statement.lstrip().startswith("UPDATE"):
                statements.append((statement, parameters))

        event.listen(conn, "before_cursor_execute", capture)
        with conn.begin():
            assert len(transitions.claim_many(conn, burst[:16])) == 16
            assert len(transitions.mark_sent_many(conn, burst[:8])) == 8
            errors = [(message_id, "e") for message_id in burst[8:16]]
            assert len(transitions.record_errors(conn, Status.RETRYING, errors)) == 8
            assert transitions.cancel(conn, burst[16])
        event.remove(conn, "before_cursor_execute", capture)
        assert len(statements) == 4
        for statement, parameters in statements:
            plan = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
            shown = "\n".join(plan)
            assert "messages_pkey" in shown, shown
            assert "messages_by_status_id" not in shown, shown
            assert "messages_pending_by_updated" not in shown, shown
