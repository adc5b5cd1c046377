"""The Dramatiq broker on Redis, and enqueueing a send by actor name (no sender import)."""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Retries
from redis.exceptions import NoScriptError

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
# How often an idle worker looks for retries whose backoff is over (see PollingBroker).
DELAY_POLL_MS = 100


def make_redis(settings: Settings) -> redis.Redis[bytes]:
    """A Redis client whose calls give up quickly when Redis is down."""
    return redis.Redis.from_url(
        str(settings.redis_url),
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
    )


def wake_key(namespace: str) -> str:
    """The list whose token wakes an idle send consumer (see PollingBroker)."""
    return f"{namespace}:{SEND_QUEUE}.wake"


class PollingBroker(RedisBroker):
    """Dramatiq's Redis broker, woken by new sends instead of polling for them.

    Dramatiq's Redis consumer only polls: an idle one sleeps up to worker_timeout (default 1 s)
    between fetches, and the same setting decides how often every worker thread wakes, so a
    short poll for fast delivery costs CPU all day. Here enqueue_sends also pushes a token on a
    wake list, and an idle send consumer waits on that list (BLPOP) for up to poll_ms: a new
    message is fetched within a round trip, and an idle worker costs a Lua call per poll_ms.
    What arrives without a token (Dramatiq's own re-enqueue of a retry whose backoff is over)
    waits for the next poll. The delay queue's consumer (retries waiting out a backoff of at
    least HERALD_MIN_BACKOFF_MS) polls every DELAY_POLL_MS.
    """

    def __init__(self, *, poll_ms: int, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]  # Dramatiq is untyped here
        self.poll_ms = poll_ms
        # Acks noted but not yet sent, by queue. Kept here, not in a consumer: after a Redis
        # error Dramatiq makes a new consumer, which sends what the old one could not.
        self.pending_acks: dict[str, list[str]] = {}
        self.pending_acks_lock = threading.Lock()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name.endswith(".DQ"):
            return _AckingConsumer(self, queue_name, prefetch, min(timeout, DELAY_POLL_MS))
        return _AckingConsumer(self, queue_name, prefetch, min(timeout, self.poll_ms), wake=True)


class _AckingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, acknowledging in batches.

    Dramatiq acknowledges each message with its own Redis round trip, from the worker thread
    that processed it. Here a worker thread only notes the ack; the consumer thread sends all
    the noted acks in one pipeline before each fetch, and when it closes (after the worker
    threads stopped). Acks that Redis did not take (an error or a timeout) stay noted on the
    broker for the next flush, by this consumer or the one Dramatiq makes after the error: a
    lost ack would leave its message in this live worker's ack set for good, counted as held.
    An ack lost with a killed process only means Dramatiq delivers that message again after
    its heartbeat timeout, and the claim turns the copy away.
    """

    def __init__(
        self,
        broker: PollingBroker,
        queue_name: str,
        prefetch: int,
        timeout: int,
        wake: bool = False,
    ) -> None:
        # Woken by a token, Dramatiq's own sleep after an empty fetch is cut to at most 1 ms.
        sleep_ms = 1 if wake else timeout
        super().__init__(broker, queue_name, prefetch, sleep_ms)  # type: ignore[no-untyped-call]
        # Below the client's socket timeout, so a wait is never taken for a dead Redis.
        socket_timeout = broker.client.connection_pool.connection_kwargs.get("socket_timeout")
        self._wait_s = min(timeout / 1000, (socket_timeout or 1.0) / 2)
        self._wake = wake_key(broker.namespace) if wake else None
        self._broker = broker

    def ack(self, message: MessageProxy) -> None:
        with self._broker.pending_acks_lock:
            acks = self._broker.pending_acks.setdefault(self.queue_name, [])
            acks.append(message.options["redis_message_id"])
        self.queued_message_ids.discard(message.message_id)

    def flush_acks(self) -> None:
        with self._broker.pending_acks_lock:
            acks = self._broker.pending_acks.pop(self.queue_name, [])
        if not acks:
            return
        try:
            dispatch_pipelined(self.broker, "ack", self.queue_name, [[ack] for ack in acks])
        except redis.RedisError as error:  # a timeout as much as a broken connection
            with self._broker.pending_acks_lock:
                # Sent with the next flush, once Redis is back (an ack sent twice is a no-op).
                self._broker.pending_acks.setdefault(self.queue_name, [])[:0] = acks
            raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]

    def __next__(self) -> MessageProxy | None:
        self.flush_acks()
        message: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        if message is None and self._wake is not None:
            try:
                self.broker.client.blpop([self._wake], timeout=self._wait_s)
            except redis.ConnectionError as error:
                raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]
        return message

    def close(self) -> None:
        """Send the last acks, and hand back what was fetched but never given to a worker.

        Dramatiq requeues its work queue on shutdown but not the consumer's prefetch cache:
        those messages would wait in this worker's ack set for its heartbeat to expire.
        """
        try:
            self.flush_acks()
            cached, self.message_cache = self.message_cache, []
            self.requeue([MessageProxy(Message.decode(data)) for data in cached if data])  # type: ignore[no-untyped-call]
        finally:
            super().close()


class CountedIds(dramatiq.Middleware):
    """Gives a send_messages batch a Redis message id that says how many ids it carries.

    However the batch is enqueued: by enqueue_sends, or again by Dramatiq itself (Retries after
    the whole batch failed, a delay ending), which draws a fresh plain uuid each time. Without
    the count the backlog gauges and the sweeper would take a batch of 64 for one message.
    """

    def before_enqueue(self, broker: dramatiq.Broker, message: Message[Any], delay: Any) -> None:
        if message.actor_name == SEND_BATCH_ACTOR:
            message.options["redis_message_id"] = counted_id(len(message.args[0]))


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
            CountedIds(),
        ],
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
    options = {"retries": retries} if retries else {}
    broker.enqueue(_send_message(message_id, options), delay=delay_ms)


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
        arguments.append([message.options["redis_message_id"], message.encode()])
    dispatch_pipelined(broker, "enqueue", SEND_QUEUE, arguments, wake=wake_key(broker.namespace))


def dead_letter(broker: RedisBroker, message_id: str) -> None:
    """Put a send of message_id in SEND_QUEUE's dead-letter set, where Dramatiq's nack puts one.

    For an id of a send_messages batch that failed for good: the batch's Dramatiq message
    itself succeeded (its other ids were sent), so it is not the one to dead-letter.
    """
    message = _send_message(message_id, {"redis_message_id": str(uuid4())})
    dead = f"{broker.namespace}:{SEND_QUEUE}.XQ"
    with broker.client.pipeline(transaction=True) as pipe:
        pipe.zadd(dead, {message.options["redis_message_id"]: current_millis()})
        pipe.hset(f"{dead}.msgs", message.options["redis_message_id"], message.encode())
        pipe.execute()


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


def dispatch_pipelined(
    broker: RedisBroker,
    command: str,
    queue_name: str,
    arguments: list[list[Any]],
    wake: str | None = None,
) -> None:
    """Run Dramatiq's dispatch script once per argument list, in one pipeline (one round trip).

    wake: a wake list (see PollingBroker) to leave one token on, in the same round trip.

    The script and its leading arguments are Dramatiq's own (its version is pinned in uv.lock;
    the end-to-end tests run real workers on what this writes).
    """
    if not arguments:
        return
    dispatch = broker.scripts["dispatch"]
    unpack_size = broker._max_unpack_size()  # type: ignore[no-untyped-call]  # untyped
    leading = [
        command, current_millis(), queue_name, broker.broker_id, broker.heartbeat_timeout,
        broker.dead_message_ttl, broker._should_do_maintenance(command), unpack_size,
    ]  # fmt: skip
    try:
        _run_dispatches(broker, dispatch.sha, leading, arguments, wake)  # type: ignore[union-attr]
    except NoScriptError:  # Redis restarted empty: load the script again, once
        dispatch.sha = broker.client.script_load(dispatch.script)  # type: ignore[union-attr]
        _run_dispatches(broker, dispatch.sha, leading, arguments, wake)  # type: ignore[union-attr]


def _run_dispatches(
    broker: RedisBroker, sha: str, leading: list[Any], arguments: list[list[Any]], wake: str | None
) -> None:
    # EVALSHA directly: a pipelined Script object would ask SCRIPT EXISTS on every execute.
    with broker.client.pipeline(transaction=False) as pipe:
        for args in arguments:
            pipe.evalsha(sha, 1, broker.namespace, *leading, *args)
        if wake is not None:
            # One token is enough (a woken worker fetches all it may): the list never grows.
            pipe.rpush(wake, 1)
            pipe.ltrim(wake, 0, 0)
        pipe.execute()


def ping_redis(broker: RedisBroker) -> None:
    """Raise unless Redis answers PING."""
    broker.client.ping()
