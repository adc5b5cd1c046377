"""The Dramatiq broker on Redis, and enqueueing a send by actor name (no sender import)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import dramatiq
import redis
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.middleware import CurrentMessage, Retries
from redis.exceptions import NoScriptError

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


class PollingBroker(RedisBroker):
    """Dramatiq's Redis broker, polling an idle queue every poll_ms.

    Dramatiq uses one worker_timeout (default 1 s) both for how long an idle consumer may sleep
    between polls of Redis and for how often every worker thread wakes to check for shutdown.
    Lowering it for fast delivery would wake every thread a hundred times a second; only the
    consumer (one thread per queue) needs to be quick, so only its poll is capped.
    """

    def __init__(self, *, poll_ms: int, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]  # Dramatiq is untyped here
        self.poll_ms = poll_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return super().consume(queue_name, prefetch, min(timeout, self.poll_ms))


def make_broker(settings: Settings) -> PollingBroker:
    """A broker with the retry policy from settings and SEND_QUEUE declared."""
    broker = PollingBroker(
        poll_ms=settings.sender_poll_ms,
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


def _send_message(message_id: str) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=SEND_QUEUE, actor_name=SEND_ACTOR, args=(message_id,), kwargs={}, options={}
    )


def enqueue_send(broker: dramatiq.Broker, message_id: str, delay_ms: int | None = None) -> None:
    """Put one send of message_id on SEND_QUEUE; the row must already be committed."""
    broker.enqueue(_send_message(message_id), delay=delay_ms)


def enqueue_sends(broker: RedisBroker, message_ids: list[str]) -> None:
    """Put sends of message_ids on SEND_QUEUE in this order, in one Redis round trip.

    RedisBroker.enqueue costs a round trip per message; this runs the same dispatch script
    with the same arguments, pipelined (Dramatiq's version is pinned in uv.lock; the
    end-to-end tests consume what this enqueues with real workers).
    """
    if not message_ids:
        return
    dispatch = broker.scripts["dispatch"]
    maintenance = broker._should_do_maintenance("enqueue")
    unpack_size = broker._max_unpack_size()  # type: ignore[no-untyped-call]  # untyped
    commands = []
    for message_id in message_ids:
        message = _send_message(message_id).copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        commands.append([
            "enqueue", current_millis(), SEND_QUEUE, broker.broker_id, broker.heartbeat_timeout,
            broker.dead_message_ttl, maintenance, unpack_size,
            message.options["redis_message_id"], message.encode(),
        ])  # fmt: skip
    try:
        _run_dispatches(broker, dispatch.sha, commands)  # type: ignore[union-attr]  # stale stubs
    except NoScriptError:  # Redis restarted empty: load the script again, once
        dispatch.sha = broker.client.script_load(dispatch.script)  # type: ignore[union-attr]
        _run_dispatches(broker, dispatch.sha, commands)  # type: ignore[union-attr]


def _run_dispatches(broker: RedisBroker, sha: str, commands: list[list[object]]) -> None:
    # EVALSHA directly: a pipelined Script object would ask SCRIPT EXISTS on every execute.
    with broker.client.pipeline(transaction=False) as pipe:
        for args in commands:
            pipe.evalsha(sha, 1, broker.namespace, *args)
        pipe.execute()


def ping_redis(broker: RedisBroker) -> None:
    """Raise unless Redis answers PING."""
    broker.client.ping()
