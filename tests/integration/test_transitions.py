"""Every status change against the real PostgreSQL: who wins, and that nothing goes backwards.

The sender's changes run as the sender runs them: coroutines on an event loop, each statement
on an AsyncDirectConnection of its own.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, LiteralString, TypeVar

import pytest
from sqlalchemy import Engine, event, insert, select, text

from herald.core import transitions
from herald.core.connections import AsyncDirectConnection
from herald.core.ids import new_id
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages
from herald.core.tenants import DEFAULT_TENANT
from herald.core.transitions import Claimed

T = TypeVar("T")


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


def _on_loop(settings: Settings, change: Callable[[AsyncDirectConnection], Awaitable[T]]) -> T:
    """change run as the sender runs it: on an event loop, over an async connection of its own."""

    async def main() -> T:
        conn = AsyncDirectConnection(settings)
        try:
            return await change(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _claim(settings: Settings, message_id: str) -> Claimed | None:
    won = _on_loop(settings, lambda conn: transitions.claim_many(conn, [message_id]))
    return won.get(message_id)


def _mark_sent(settings: Settings, message_id: str) -> bool:
    moved = _on_loop(settings, lambda conn: transitions.mark_sent_many(conn, [message_id]))
    return message_id in moved


def _record_error(settings: Settings, target: Status, message_id: str, error: str) -> bool:
    errors = [(message_id, error)]
    moved = _on_loop(settings, lambda conn: transitions.record_errors(conn, target, errors))
    return message_id in moved


def test_claim_moves_queued_to_sending_and_counts_the_attempt(
    settings: Settings, engine: Engine
) -> None:
    message_id = _row(engine, Status.QUEUED)
    claimed = _claim(settings, message_id)
    assert claimed is not None
    assert (claimed.destination, claimed.body) == ("d", "b")
    assert claimed.attempts == claimed.attempt == 1
    assert _status(engine, message_id) == ("sending", 1, None)


def test_second_claim_returns_none(settings: Settings, engine: Engine) -> None:
    message_id = _row(engine, Status.QUEUED)
    assert _claim(settings, message_id) is not None
    assert _claim(settings, message_id) is None


def test_concurrent_claims_have_exactly_one_winner(settings: Settings, engine: Engine) -> None:
    message_id = _row(engine, Status.QUEUED)

    async def race() -> list[dict[str, Claimed]]:
        # Four senders' connections, their claims in flight at once.
        conns = [AsyncDirectConnection(settings) for _ in range(4)]
        try:
            return await asyncio.gather(
                *(transitions.claim_many(conn, [message_id]) for conn in conns)
            )
        finally:
            for conn in conns:
                await conn.close()

    wins = asyncio.run(race())
    assert [message_id in won for won in wins].count(True) == 1


def test_retrying_message_can_be_claimed_again(settings: Settings, engine: Engine) -> None:
    message_id = _row(engine, Status.RETRYING)
    assert _claim(settings, message_id) is not None


@pytest.mark.parametrize(
    "status", [Status.SCHEDULED, Status.SENDING, Status.SENT, Status.FAILED, Status.CANCELED]
)
def test_only_queued_or_retrying_can_be_claimed(
    settings: Settings, engine: Engine, status: Status
) -> None:
    message_id = _row(engine, status)
    assert _claim(settings, message_id) is None
    assert _status(engine, message_id)[0] == status


def test_mark_sent_records_sent_at_and_clears_the_error(settings: Settings, engine: Engine) -> None:
    message_id = _row(engine, Status.SENDING)
    with engine.begin() as conn:
        conn.execute(
            messages.update().where(messages.c.id == message_id).values(last_error="HTTP 503")
        )
    assert _mark_sent(settings, message_id)
    with engine.connect() as conn:
        row = conn.execute(
            select(messages.c.sent_at, messages.c.last_error).where(messages.c.id == message_id)
        ).one()
    assert row.sent_at is not None
    assert row.last_error is None


@pytest.mark.parametrize("target", [Status.RETRYING, Status.FAILED])
def test_failures_record_last_error(settings: Settings, engine: Engine, target: Status) -> None:
    message_id = _row(engine, Status.SENDING)
    assert _record_error(settings, target, message_id, "HTTP 503")
    assert _status(engine, message_id) == (target, 0, "HTTP 503")


def test_an_error_leads_only_to_retrying_or_failed(settings: Settings, engine: Engine) -> None:
    message_id = _row(engine, Status.SENDING)
    with pytest.raises(ValueError, match="retrying or failed"):
        _record_error(settings, Status.SENT, message_id, "HTTP 503")
    assert _status(engine, message_id)[0] == "sending"


def test_a_sent_message_never_moves_backwards(settings: Settings, engine: Engine) -> None:
    message_id = _row(engine, Status.SENT)
    assert not _record_error(settings, Status.RETRYING, message_id, "late")
    assert not _record_error(settings, Status.FAILED, message_id, "late")
    assert _claim(settings, message_id) is None
    with engine.begin() as conn:
        assert not transitions.cancel(conn, DEFAULT_TENANT, message_id)
        assert not transitions.requeue_failed(conn, DEFAULT_TENANT, message_id)
    assert _status(engine, message_id)[0] == "sent"


@pytest.mark.parametrize(
    ("status", "allowed"),
    [(Status.SCHEDULED, True), (Status.QUEUED, True), (Status.SENDING, False),
     (Status.RETRYING, False), (Status.SENT, False), (Status.FAILED, False)],
)  # fmt: skip
def test_cancel_only_before_a_sender_claims(engine: Engine, status: Status, allowed: bool) -> None:
    message_id = _row(engine, status)
    with engine.begin() as conn:
        assert transitions.cancel(conn, DEFAULT_TENANT, message_id) is allowed


def test_manual_retry_requeues_only_failed(engine: Engine) -> None:
    failed, sent = _row(engine, Status.FAILED), _row(engine, Status.SENT)
    with engine.begin() as conn:
        assert transitions.requeue_failed(conn, DEFAULT_TENANT, failed)
        assert not transitions.requeue_failed(conn, DEFAULT_TENANT, sent)
    assert _status(engine, failed)[0] == "queued"


def test_a_claim_after_a_manual_retry_counts_its_attempt_from_the_retry(
    settings: Settings, engine: Engine
) -> None:
    message_id = _row(engine, Status.FAILED)
    with engine.begin() as conn:
        spent = messages.update().where(messages.c.id == message_id).values(attempts=4)
        conn.execute(spent)
        assert transitions.requeue_failed(conn, DEFAULT_TENANT, message_id)
    claimed = _claim(settings, message_id)
    assert claimed is not None
    assert (claimed.attempts, claimed.attempt) == (5, 1)


def test_promote_due_moves_only_scheduled_rows_whose_time_has_come(engine: Engine) -> None:
    due, later = _row(engine, Status.SCHEDULED), _row(engine, Status.SCHEDULED)
    with engine.begin() as conn:
        past_or_future = "CASE WHEN id = :due THEN interval '-1 s' ELSE interval '1 h' END"
        conn.execute(text(f"UPDATE messages SET send_at = now() + {past_or_future}"), {"due": due})
    with engine.begin() as conn:
        assert transitions.promote_due(conn, 10) == [due]
    with engine.begin() as conn:
        assert transitions.promote_due(conn, 10) == []
    assert (_status(engine, due)[0], _status(engine, later)[0]) == ("queued", "scheduled")


def test_unknown_id_moves_nothing(settings: Settings, engine: Engine) -> None:
    assert _claim(settings, new_id()) is None
    with engine.begin() as conn:
        assert not transitions.cancel(conn, DEFAULT_TENANT, new_id())


def test_status_column_rejects_unknown_statuses(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(messages).values(id=new_id(), destination="d", body="b", status="lost"))


def test_errors_are_recorded_in_one_statement_each_with_its_own_text(
    settings: Settings, engine: Engine
) -> None:
    first, second = _row(engine, Status.SENDING), _row(engine, Status.SENDING)
    done = _row(engine, Status.SENT)
    errors = [(first, "HTTP 503"), (second, "timeout"), (done, "late")]
    moved = _on_loop(
        settings, lambda conn: transitions.record_errors(conn, Status.RETRYING, errors)
    )
    assert moved == {first, second}
    assert _status(engine, first) == ("retrying", 0, "HTTP 503")
    assert _status(engine, second) == ("retrying", 0, "timeout")
    assert _status(engine, done)[0] == "sent"


def test_many_claims_and_sends_move_only_eligible_rows(settings: Settings, engine: Engine) -> None:
    queued, retrying = _row(engine, Status.QUEUED), _row(engine, Status.RETRYING)
    canceled = _row(engine, Status.CANCELED)
    claims = [queued, retrying, canceled, queued]
    won = _on_loop(settings, lambda conn: transitions.claim_many(conn, claims))
    assert set(won) == {queued, retrying}
    sends = [queued, canceled]
    assert _on_loop(settings, lambda conn: transitions.mark_sent_many(conn, sends)) == {queued}


def _insert_many(engine: Engine, status: Status, count: int) -> list[str]:
    ids = [new_id() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(messages),
            [{"id": i, "destination": "d", "body": "b", "status": status} for i in ids],
        )
    return ids


class _Recording(AsyncDirectConnection):
    """The sender's connection, noting each statement it runs (to EXPLAIN it afterwards)."""

    statements: list[tuple[LiteralString, Any]]

    async def execute(self, statement: LiteralString, params: Any) -> Any:
        self.statements.append((statement, params))
        return await super().execute(statement, params)


def test_transitions_by_id_use_the_primary_key_even_when_statistics_predate_a_burst(
    settings: Settings, engine: Engine
) -> None:
    # The planner last looked when nothing was queued; then a burst arrived (autovacuum has
    # not analyzed it yet, or is off): it believes queued rows rare.
    _insert_many(engine, Status.SENT, 3000)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE messages"))
        conn.commit()
    burst = _insert_many(engine, Status.QUEUED, 3000)
    sender = _Recording(settings)
    sender.statements = []

    async def deliver() -> tuple[int, int, int]:
        errors = [(message_id, "e") for message_id in burst[8:16]]
        try:
            return (
                len(await transitions.claim_many(sender, burst[:16])),
                len(await transitions.mark_sent_many(sender, burst[:8])),
                len(await transitions.record_errors(sender, Status.RETRYING, errors)),
            )
        finally:
            await sender.close()

    assert asyncio.run(deliver()) == (16, 8, 8)
    statements: list[tuple[str, Any]] = list(sender.statements)
    with engine.connect() as conn:

        def capture(*args: Any) -> None:
            if args[2].lstrip().startswith("UPDATE"):
                statements.append((args[2], args[3]))

        event.listen(conn, "before_cursor_execute", capture)
        with conn.begin():
            assert transitions.cancel(conn, DEFAULT_TENANT, burst[16])
        event.remove(conn, "before_cursor_execute", capture)
        assert len(statements) == 4
        for statement, parameters in statements:
            plan = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
            shown = "\n".join(plan)
            # By the row's id (a client's cancel names its tenant too: either index finds it).
            assert "messages_pkey" in shown or "messages_by_tenant_id" in shown, shown
            assert "messages_by_tenant_status_id" not in shown, shown
            assert "messages_by_status_id" not in shown, shown
            assert "messages_pending_by_updated" not in shown, shown
