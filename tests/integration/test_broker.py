"""The send queue's broker on real Redis: batches, the wake token, pipelined acks."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from herald.core.adapters.dramatiq import queue_keys
from herald.core.broker import SEND_BATCH_MAX, SEND_QUEUE, enqueue_sends


def wake_key(namespace: str) -> str:
    return queue_keys(namespace, SEND_QUEUE).wake


def test_enqueued_sends_leave_one_wake_token_however_many_batches(broker: RedisBroker) -> None:
    enqueue_sends(broker, [f"m{i}" for i in range(SEND_BATCH_MAX * 2 + 1)])
    enqueue_sends(broker, ["n"])
    assert broker.client.lrange(wake_key(broker.namespace), 0, -1) == [b"1"]


def test_an_idle_consumer_takes_the_token_and_fetches_what_it_announced(
    broker: RedisBroker,
) -> None:
    consumer = broker.consume(SEND_QUEUE, prefetch=4)
    try:
        assert next(consumer) is None  # nothing yet: it waited for a token (or its poll)
        enqueue_sends(broker, ["a", "b"])
        message = next(consumer)
        assert message is not None
        assert list(message.args) == [["a", "b"]]
        assert message.actor_name == "send_messages"
        assert next(consumer) is None  # the queue is empty: the token is spent
        assert broker.client.llen(wake_key(broker.namespace)) == 0
        consumer.ack(message)
    finally:
        consumer.close()
    assert broker.client.llen(f"{broker.namespace}:{SEND_QUEUE}") == 0
