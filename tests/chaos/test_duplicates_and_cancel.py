"""Queue messages that must not send: duplicates of one message, and a canceled message's."""

from __future__ import annotations

import pytest

from dev.embedded import EmbeddedRedis
from herald.core.broker import SEND_QUEUE, enqueue_send, make_broker
from herald.core.settings import Settings
from tests.chaos.figures import Figures
from tests.chaos.outcomes import (
    configure_provider,
    delivered_ids,
    provider_stats,
    statuses,
)
from tests.chaos.traffic import DESTINATION
from tests.stack import Stack, sender_outcomes, wait_for

DUPLICATES = 10  # extra queue messages for one id, raced by 16 threads while it is in flight


@pytest.fixture
def chaos_settings(chaos_settings: Settings) -> Settings:
    """No sweeps during this test: every queue message here is one the test put there."""
    return chaos_settings.model_copy(update={"stuck_after": 600.0})


def _post(stack: Stack, body: str) -> str:
    return stack.post(body, DESTINATION)


def _skipped(stack: Stack) -> int:
    return sender_outcomes(stack).get("skipped", 0)


def test_duplicate_queue_messages_and_a_message_canceled_while_queued_do_not_send(
    idle_stack: Stack, redis_server: EmbeddedRedis, figures: Figures
) -> None:
    stack = idle_stack
    # Slow calls: the duplicates reach the sender while the first delivery is in flight.
    configure_provider(stack.provider, latency_ms=300)
    once = _post(stack, "once, however often it is queued")
    canceled = _post(stack, "canceled while queued")
    broker = make_broker(stack.settings)
    for _ in range(DUPLICATES):
        enqueue_send(broker, once)
    answer = stack.http.post(f"{stack.api}/messages/{canceled}/cancel")
    assert answer.json() == {"id": canceled, "status": "canceled"}
    # Both posts' queue messages and the duplicates wait in Redis: the canceled one's too.
    key = f"{stack.settings.redis_namespace}:{SEND_QUEUE}"
    with redis_server.client() as queue:
        wait_for(lambda: queue.llen(key) == DUPLICATES + 2, 10, "every queue message in Redis")
        queued = queue.llen(key)

    stack.start_sender(processes=2, threads=8)
    stack.wait_status(once, "sent", timeout=30)
    # Every queue message is handled: one sent, the duplicates and the canceled one skipped.
    wait_for(lambda: _skipped(stack) == DUPLICATES + 1, 30, "every queue message handled")
    # And a duplicate that arrives after the send changes nothing either.
    enqueue_send(broker, once)
    wait_for(lambda: _skipped(stack) == DUPLICATES + 2, 30, "the late duplicate handled")
    broker.close()

    stats = provider_stats(stack.provider)
    recorded = statuses(str(stack.settings.database_url), [once, canceled])
    figures(
        queue_messages=queued + 1,
        skipped=_skipped(stack),
        provider_received=stats["received"],
        provider_unique=stats["unique"],
        raw_repeated_calls=stats["duplicates"],
        canceled_status=recorded[canceled],
    )
    assert stats == {"received": 1, "unique": 1, "duplicates": 0}
    assert delivered_ids(stack.provider) == [once]
    assert recorded == {once: "sent", canceled: "canceled"}
    full = stack.http.get(f"{stack.status}/message/{once}").json()
    assert full["attempts"] == 1
