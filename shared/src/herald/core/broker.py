"""The Dramatiq broker on Redis, and enqueueing a send by actor name (no sender import)."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Retries

from herald.core.settings import Settings

SEND_QUEUE = "send"
SEND_ACTOR = "send_message"


def make_redis(settings: Settings) -> redis.Redis[bytes]:
    """A Redis client whose calls give up quickly when Redis is down."""
    return redis.Redis.from_url(
        str(settings.redis_url),
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
    )


def make_broker(settings: Settings) -> RedisBroker:
    """A broker with the retry policy from settings and SEND_QUEUE declared."""
    broker = RedisBroker(  # type: ignore[no-untyped-call]  # Dramatiq's brokers are untyped
        client=make_redis(settings),
        namespace=settings.redis_namespace,
        middleware=[
            Retries(
                max_retries=settings.max_retries,
                min_backoff=settings.min_backoff_ms,
                max_backoff=settings.max_backoff_ms,
            ),
            CurrentMessage(),
        ],
    )
    broker.declare_queue(SEND_QUEUE)
    return broker


def enqueue_send(broker: dramatiq.Broker, message_id: str, delay_ms: int | None = None) -> None:
    """Put one send of message_id on SEND_QUEUE; the row must already be committed."""
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=SEND_QUEUE,
        actor_name=SEND_ACTOR,
        args=(message_id,),
        kwargs={},
        options={},
    )
    broker.enqueue(message, delay=delay_ms)


def ping_redis(broker: RedisBroker) -> None:
    """Raise unless Redis answers PING."""
    broker.client.ping()
