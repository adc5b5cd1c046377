"""The Dramatiq broker on Redis, and enqueueing a send by actor name (no sender import)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from herald.core.adapters import dramatiq as adapter
from herald.core.adapters.dramatiq import PollingBroker, dispatch_pipelined
from herald.core.retries import RetryPolicy
from herald.core.settings import Settings

SEND_QUEUE = "send"
# One id per Dramatiq message: retries (Retries middleware, dead letters) and old queue messages.
SEND_ACTOR = "send_message"
# Many ids per Dramatiq message: every first attempt. Dramatiq's own work per message (fetch,
# decode, hand-off to a worker thread, middleware, ack) costs more than a provider call; shared
# by a batch, it no longer counts (docs/performance.md).
SEND_BATCH_ACTOR = "send_messages"
# Most ids one send_messages carries: a stopping worker hands back those it has not started.
SEND_BATCH_MAX = 64


def make_redis(settings: Settings) -> redis.Redis[bytes]:
    """A Redis client whose calls give up quickly when Redis is down."""
    return redis.Redis.from_url(
        str(settings.redis_url),
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
    )


class CountedIds(dramatiq.Middleware):
    """Gives a send_messages batch a Redis message id that says how many ids it carries.

    However the batch is enqueued: by enqueue_sends, or again by Dramatiq itself (Retries after
    the whole batch failed, a delay ending), which draws a fresh plain uuid each time. Without
    the count the backlog gauges and the sweeper would take a batch of 64 for one message.
    """

    def before_enqueue(self, broker: dramatiq.Broker, message: Message[Any], delay: Any) -> None:
        if message.actor_name == SEND_BATCH_ACTOR:
            # RedisBroker.enqueue drew a fresh id just before: this one replaces it.
            adapter.name_in_redis(message, counted_id(len(message.args[0])))


def make_broker(settings: Settings) -> PollingBroker:
    """A broker with the retry policy from settings and SEND_QUEUE declared."""
    broker = PollingBroker(
        poll_ms=settings.sender_poll_ms,
        client=make_redis(settings),
        namespace=settings.redis_namespace,
        middleware=[RetryPolicy.from_settings(settings).middleware(), CountedIds()],
    )
    broker.declare_queue(SEND_QUEUE)
    return broker


def _send_message(message_id: str, options: dict[str, Any]) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=SEND_QUEUE, actor_name=SEND_ACTOR, args=(message_id,), kwargs={}, options=options
    )


def enqueue_send(
    broker: dramatiq.Broker, message_id: str, delay_ms: int | None = None, retries: int = 0
) -> None:
    """Put one send of message_id on SEND_QUEUE (retries: how many it follows); the row must
    already be committed."""
    broker.enqueue(_send_message(message_id, adapter.retried(retries)), delay=delay_ms)


def counted_id(ids: int) -> str:
    """A Redis message id that says how many Herald messages its Dramatiq message carries.

    Dramatiq treats it as opaque; the backlog gauges count ids with it (see ids_held), without
    reading the messages themselves.
    """
    return f"{uuid4()}.{ids}"


def enqueue_sends(broker: RedisBroker, message_ids: list[str]) -> None:
    """Put sends of message_ids on SEND_QUEUE in this order, in one Redis round trip.

    They go in send_messages batches of up to SEND_BATCH_MAX ids. RedisBroker.enqueue costs a
    round trip per message; this runs the same dispatch script with the same arguments, pipelined.
    """
    arguments = []
    for start in range(0, len(message_ids), SEND_BATCH_MAX):
        chunk = message_ids[start : start + SEND_BATCH_MAX]
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=SEND_QUEUE, actor_name=SEND_BATCH_ACTOR, args=(chunk,), kwargs={},
            options={},
        )  # fmt: skip
        broker.emit_before("enqueue", message, None)  # CountedIds names it
        arguments.append([adapter.redis_message_id(message), message.encode()])
    wake = adapter.queue_keys(broker.namespace, SEND_QUEUE).wake
    dispatch_pipelined(broker, "enqueue", SEND_QUEUE, arguments, wake=wake)


def dead_letter(broker: RedisBroker, message_id: str) -> None:
    """Put a send of message_id in SEND_QUEUE's dead-letter set, where Dramatiq's nack puts one.

    For an id of a send_messages batch that failed for good: the batch's Dramatiq message
    itself succeeded (its other ids were sent), so it is not the one to dead-letter.
    """
    message = _send_message(message_id, {})
    adapter.name_in_redis(message, str(uuid4()))
    adapter.dead_letter(broker, message)


# How many ids the Redis message ids of a set, or of a page of a list, stand for (counted_id).
_COUNT_IDS = """
local members
if ARGV[1] == 'set' then
    members = redis.call('smembers', KEYS[1])
elseif ARGV[1] == 'zset' then
    members = redis.call('zrange', KEYS[1], ARGV[2], ARGV[3])
else
    members = redis.call('lrange', KEYS[1], ARGV[2], ARGV[3])
end
local ids = 0
for _, member in ipairs(members) do
    ids = ids + (tonumber(string.match(member, '%.(%d+)$')) or 1)
end
return {ids, #members}
"""
# A list or sorted set is read a page per script call: a backlog of a million single sends never
# blocks Redis for long. While it moves, the total is approximate (a gauge's accuracy).
_PAGE = 10_000


def ids_held(client: redis.Redis[bytes], key: str, kind: str = "list") -> int:
    """How many Herald messages the Dramatiq messages at key carry: a list, "zset" or "set"."""
    count = client.register_script(_COUNT_IDS)
    if kind == "set":  # an ack set: at most a worker's prefetch
        return int(count(keys=[key], args=["set"])[0])
    total = start = 0
    while True:
        ids, got = count(keys=[key], args=[kind, start, start + _PAGE - 1])
        total, start = total + int(ids), start + int(got)
        if got < _PAGE:
            return total


def ping_redis(broker: RedisBroker) -> None:
    """Raise unless Redis answers PING."""
    broker.client.ping()
