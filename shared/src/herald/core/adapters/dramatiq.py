"""Dramatiq where Herald needs more than its public API. Written for Dramatiq 2.2.1 (pinned).

Public hooks first: the acking consumer comes in through RedisBroker.consume, the prefetch
through before_worker_boot. What has no hook is named here and nowhere else, and
tests/contract/test_dramatiq_adapter.py checks it against the installed Dramatiq: the Redis
layout of the dispatch script (key names, compact JSON with an `eta`) and its leading
arguments; _RedisConsumer; RedisBroker.enqueue drawing a fresh redis_message_id before
before_enqueue; Retries' delay and its `retries` option; the CLI; the worker's stop handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import dramatiq
import redis
from dramatiq import cli
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Retries
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF
from redis.exceptions import NoScriptError

VERSION = "2.2.1"

# The option under which RedisBroker stores a message (a fresh uuid per enqueue).
_REDIS_ID = "redis_message_id"
# How a Lua script reads a stored message's eta: Dramatiq writes compact JSON.
ETA_LUA_PATTERN = '"eta":(%d+)'


@dataclass(frozen=True)
class QueueKeys:
    """Where Dramatiq's Redis broker keeps one queue (dispatch.lua), and Herald's wake list."""

    queue: str  # list of Redis message ids, oldest first
    messages: str  # hash: Redis message id -> message
    delayed: str  # the delay queue: retries waiting out their backoff
    delayed_messages: str
    dead: str  # sorted set of dead letters, by time
    dead_messages: str
    wake: str  # Herald's: a token that wakes an idle consumer (PollingBroker)


def queue_keys(namespace: str, queue: str) -> QueueKeys:
    """The Redis keys of queue in namespace."""
    base = f"{namespace}:{queue}"
    return QueueKeys(
        base, f"{base}.msgs", f"{base}.DQ", f"{base}.DQ.msgs", f"{base}.XQ", f"{base}.XQ.msgs",
        f"{base}.wake",
    )  # fmt: skip


def heartbeats(client: redis.Redis[bytes], namespace: str) -> dict[bytes, float]:
    """When each worker last touched Redis (ms since the epoch), by worker id."""
    return dict(client.zrange(f"{namespace}:__heartbeats__", 0, -1, withscores=True))


def held_sets(
    client: redis.Redis[bytes], namespace: str, queue: str
) -> Iterator[tuple[bytes, bool, str]]:
    """Each worker's set of messages fetched from queue and not acknowledged yet.

    Yields (worker id, whether it holds delay-queue messages, the set's key).
    """
    prefix = f"{namespace}:__acks__."
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        name = key.decode()
        for suffix, delayed in ((f".{queue}.DQ", True), (f".{queue}", False)):
            if name.endswith(suffix):
                yield name[len(prefix) : -len(suffix)].encode(), delayed, name
                break


def redis_message_id(message: Message[Any] | MessageProxy) -> str:
    """The id message is stored under in Redis."""
    return str(message.options[_REDIS_ID])


def name_in_redis(message: Message[Any], redis_id: str) -> None:
    """Store message under redis_id: from before_enqueue, once RedisBroker drew its own."""
    message.options[_REDIS_ID] = redis_id


def retried(times: int) -> dict[str, int]:
    """Options of a message that Retries treats as already retried `times` times."""
    return {"retries": times} if times else {}


def retries_backoff_ms(retries: Retries, done: int) -> int:
    """The delay Retries gives a message that has been retried `done` times, jitter included."""
    max_backoff = min(retries.max_backoff, DEFAULT_MAX_BACKOFF)
    _, delay = compute_backoff(done, factor=retries.min_backoff, max_backoff=max_backoff)
    return delay


def dead_letter(broker: RedisBroker, message: Message[Any]) -> None:
    """Put message in its queue's dead-letter set, where Dramatiq's nack puts one."""
    keys = queue_keys(broker.namespace, message.queue_name)
    redis_id = redis_message_id(message)
    with broker.client.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.dead, {redis_id: current_millis()})
        pipe.hset(keys.dead_messages, redis_id, message.encode())
        pipe.execute()


def dispatch_pipelined(
    broker: RedisBroker,
    command: str,
    queue_name: str,
    arguments: list[list[Any]],
    wake: str | None = None,
) -> None:
    """Run Dramatiq's dispatch script once per argument list, in one pipeline (one round trip).

    wake: a wake list (see PollingBroker) to leave one token on, in the same round trip.
    """
    if not arguments:
        return
    dispatch = broker.scripts["dispatch"]
    leading = [
        command, current_millis(), queue_name, broker.broker_id, broker.heartbeat_timeout,
        broker.dead_message_ttl, broker._should_do_maintenance(command),
        broker._max_unpack_size(),  # type: ignore[no-untyped-call]  # untyped
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


# How often an idle worker looks for retries whose backoff is over (see PollingBroker).
DELAY_POLL_MS = 100


class PollingBroker(RedisBroker):
    """Dramatiq's Redis broker, woken by new sends instead of polling for them.

    Dramatiq's Redis consumer only polls: an idle one sleeps up to worker_timeout (default 1 s)
    between fetches, and the same setting decides how often every worker thread wakes, so a
    short poll for fast delivery costs CPU all day. Here whoever enqueues also pushes a token on
    the queue's wake list, and an idle consumer waits on that list (BLPOP) for up to poll_ms: a
    new message is fetched within a round trip, and an idle worker costs a Lua call per poll_ms.
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
        wake = queue_keys(self.namespace, queue_name).wake
        return _AckingConsumer(self, queue_name, prefetch, min(timeout, self.poll_ms), wake)


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

    Every Redis error of an ack, a requeue or a close is a ConnectionClosed: any other would
    end Dramatiq's worker stop half way, its event loop thread left running.
    """

    def __init__(
        self, broker: PollingBroker, queue_name: str, prefetch: int, timeout: int, wake: str = ""
    ) -> None:
        # Woken by a token, Dramatiq's own sleep after an empty fetch is cut to at most 1 ms.
        sleep_ms = 1 if wake else timeout
        super().__init__(broker, queue_name, prefetch, sleep_ms)  # type: ignore[no-untyped-call]
        # Below the client's socket timeout, so a wait is never taken for a dead Redis.
        socket_timeout = broker.client.connection_pool.connection_kwargs.get("socket_timeout")
        self._wait_s = min(timeout / 1000, (socket_timeout or 1.0) / 2)
        self._wake = wake
        self._broker = broker

    def ack(self, message: MessageProxy) -> None:
        with self._broker.pending_acks_lock:
            acks = self._broker.pending_acks.setdefault(self.queue_name, [])
            acks.append(redis_message_id(message))
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

    def requeue(self, messages: Any) -> None:
        try:
            super().requeue(messages)  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]

    def __next__(self) -> MessageProxy | None:
        self.flush_acks()
        message: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        if message is None and self._wake:
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
        cached, self.message_cache = self.message_cache, []
        try:
            self.flush_acks()
        finally:
            try:
                self.requeue([MessageProxy(Message.decode(data)) for data in cached if data])
            finally:
                super().close()


class PrefetchPerThread(dramatiq.Middleware):
    """A worker process holds at most `per_thread` queue messages per worker thread.

    Sets the Worker's prefetch before its consumers start (Dramatiq's default: twice the
    threads, or the process-wide QUEUE_PREFETCH).
    """

    def __init__(self, per_thread: int = 1) -> None:
        self._per_thread = per_thread

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        worker.queue_prefetch = self._per_thread * worker.worker_threads


def run_cli(argv: list[str]) -> int:
    """Run Dramatiq's command line (`dramatiq ARGV`) in this process; its exit code."""
    arguments = cli.make_argument_parser().parse_args(argv)  # type: ignore[no-untyped-call]
    return int(cli.main(arguments))  # type: ignore[no-untyped-call]


def graceful_stop_only() -> None:
    """In a worker process: every SIGTERM or SIGHUP means the first one's graceful stop.

    Dramatiq's handler raises SystemExit on the second signal, wherever the main thread is:
    the rest of Worker.stop is skipped, its event loop thread (not a daemon) never stops, and
    the process waits for it forever while its consumers go on fetching. A group's signal may
    reach a worker before setup() installs this, so Dramatiq's count may be ahead of ours:
    its SystemExit is swallowed. Bounded by --worker-shutdown-timeout, then by
    herald.core.lifetime.exit_within.
    """
    dramatiq_handler = signal.getsignal(signal.SIGTERM)
    if not callable(dramatiq_handler):
        return
    stopping = False

    def first_only(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # SystemExit: Dramatiq counted an earlier signal, so it is stopping already.
        with contextlib.suppress(SystemExit):
            dramatiq_handler(signum, frame)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is dramatiq_handler:
            signal.signal(signum, first_only)
