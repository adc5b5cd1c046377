"""What herald.core.adapters.dramatiq relies on in Dramatiq still holds (Redis at most, fast)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator
from importlib.metadata import version
from queue import PriorityQueue
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import cli as dramatiq_cli
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Retries
from dramatiq.worker import ConsumerThread

from herald.core.adapters import dramatiq as adapter
from herald.core.adapters.dramatiq import PollingBroker, queue_keys
from herald.core.settings import Settings
from herald.sender.cli import dramatiq_args
from tests.servers import REDIS_URL

QUEUE = "q"


@pytest.fixture
def client() -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def plain(client: redis.Redis[bytes], namespace: str) -> RedisBroker:
    """Dramatiq's own broker, untouched, as the reference."""
    broker = RedisBroker(client=client, namespace=namespace)  # type: ignore[no-untyped-call]
    broker.declare_queue(QUEUE)
    return broker


@pytest.fixture
def polling(client: redis.Redis[bytes], namespace: str) -> PollingBroker:
    broker = PollingBroker(poll_ms=10, client=client, namespace=namespace)
    broker.declare_queue(QUEUE)
    return broker


def _message(**options: Any) -> Message[Any]:
    return Message(queue_name=QUEUE, actor_name="a", args=(1,), kwargs={}, options=options)


def test_the_installed_dramatiq_is_the_version_the_adapter_was_written_for() -> None:
    assert version("dramatiq") == adapter.VERSION


def test_the_dispatch_script_reads_its_leading_arguments_in_the_adapters_order(
    plain: RedisBroker,
) -> None:
    script = plain.scripts["dispatch"].script.decode()  # type: ignore[union-attr]
    leading = [
        "command", "timestamp", "queue_name", "worker_id", "heartbeat_timeout",
        "dead_message_ttl", "do_maintenance", "max_unpack_size",
    ]  # fmt: skip
    for position, name in enumerate(leading, start=1):
        assert f"local {name} = ARGV[{position}]" in script
    assert "for i=9,#ARGV do" in script  # the command's own arguments follow


def test_a_pipelined_enqueue_is_fetched_and_acked_as_dramatiqs_own(
    plain: RedisBroker, client: redis.Redis[bytes], namespace: str
) -> None:
    message = _message(redis_message_id="r1")
    adapter.dispatch_pipelined(plain, "enqueue", QUEUE, [["r1", message.encode()]])
    keys = queue_keys(namespace, QUEUE)
    assert client.lrange(keys.queue, 0, -1) == [b"r1"]

    consumer = plain.consume(QUEUE, prefetch=1, timeout=10)
    fetched = next(consumer)
    assert fetched is not None
    assert fetched.message_id == message.message_id
    held = list(adapter.held_sets(client, namespace, QUEUE))
    assert held == [(plain.broker_id.encode(), False, f"{namespace}:__acks__.{plain.broker_id}.q")]
    assert plain.broker_id.encode() in adapter.heartbeats(client, namespace)

    adapter.dispatch_pipelined(plain, "ack", QUEUE, [["r1"]])
    assert client.scard(held[0][2]) == 0
    assert client.hlen(keys.messages) == 0


def test_redis_broker_names_a_message_before_before_enqueue_runs(
    plain: RedisBroker, client: redis.Redis[bytes], namespace: str
) -> None:
    drawn: list[str] = []

    class Rename(dramatiq.Middleware):
        def before_enqueue(self, broker: Any, message: Message[Any], delay: Any) -> None:
            drawn.append(adapter.redis_message_id(message))
            adapter.name_in_redis(message, "renamed.3")

    plain.add_middleware(Rename())
    plain.enqueue(_message(redis_message_id="stale"))
    assert len(drawn) == 1
    assert drawn[0] != "stale"  # a fresh uuid each enqueue
    assert client.lrange(queue_keys(namespace, QUEUE).queue, 0, -1) == [b"renamed.3"]


def test_a_delayed_message_is_stored_as_json_whose_eta_the_lua_pattern_reads(
    plain: RedisBroker, client: redis.Redis[bytes], namespace: str
) -> None:
    stored = plain.enqueue(_message(), delay=60_000)
    keys = queue_keys(namespace, QUEUE)
    data = client.hget(keys.delayed_messages, adapter.redis_message_id(stored))
    read = "return tonumber(string.match(ARGV[1], ARGV[2]))"
    eta = client.eval(read, 0, data, adapter.ETA_LUA_PATTERN)  # type: ignore[no-untyped-call]
    assert eta == stored.options["eta"]


def test_dead_letter_puts_a_message_where_dramatiqs_nack_does(
    plain: RedisBroker, client: redis.Redis[bytes], namespace: str
) -> None:
    plain.enqueue(_message())
    consumer = plain.consume(QUEUE, prefetch=1, timeout=10)
    nacked = next(consumer)
    assert nacked is not None
    consumer.nack(nacked)
    ours = _message()
    adapter.name_in_redis(ours, "ours")
    adapter.dead_letter(plain, ours)
    keys = queue_keys(namespace, QUEUE)
    dead = {member.decode() for member in client.zrange(keys.dead, 0, -1)}
    assert dead == {adapter.redis_message_id(nacked), "ours"}
    assert client.hlen(keys.dead_messages) == 2


def test_the_acking_consumer_hands_back_its_prefetch_on_close(
    polling: PollingBroker, client: redis.Redis[bytes], namespace: str
) -> None:
    batch = [[f"r{n}", _message(redis_message_id=f"r{n}").encode()] for n in range(3)]
    adapter.dispatch_pipelined(polling, "enqueue", QUEUE, batch)
    consumer = polling.consume(QUEUE, prefetch=3, timeout=10)
    taken = next(consumer)  # Dramatiq fetched all three; two wait in its cache
    assert taken is not None
    consumer.ack(taken)
    consumer.close()
    keys = queue_keys(namespace, QUEUE)
    assert sorted(client.lrange(keys.queue, 0, -1)) == [b"r1", b"r2"]
    assert client.hlen(keys.messages) == 2  # the acked one is gone


def test_a_consumer_thread_drops_its_delay_queue_on_a_connection_error() -> None:
    # backlog.py counts a retry a live worker holds long past its eta as lost: this is why.
    class Broken(StubBroker):
        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 100) -> Any:
            return iter_then_fail(thread)

    def iter_then_fail(thread: ConsumerThread) -> Iterator[MessageProxy]:
        yield MessageProxy(_message(eta=2**41))  # far in the future: it stays delayed
        assert thread.delay_queue.qsize() == 1
        thread.running = False  # no restart after the error
        raise ConnectionClosed(OSError("gone"))  # type: ignore[no-untyped-call]

    broker = Broken()
    broker.declare_queue(QUEUE)
    thread = ConsumerThread(
        broker=broker, queue_name=QUEUE, prefetch=1, work_queue=PriorityQueue(), worker_timeout=10
    )
    thread.run()
    assert thread.delay_queue.qsize() == 0


def test_a_consumer_threads_close_swallows_a_connection_closed() -> None:
    # The acking consumer's close raises ConnectionClosed for any Redis error, relying on this.
    class Failing:
        def requeue(self, messages: Any) -> None:
            list(messages)

        def close(self) -> None:
            raise ConnectionClosed(OSError("gone"))  # type: ignore[no-untyped-call]

    thread = ConsumerThread(
        broker=StubBroker(), queue_name=QUEUE, prefetch=1, work_queue=PriorityQueue(),
        worker_timeout=10,
    )  # fmt: skip
    thread.consumer = Failing()  # type: ignore[assignment]
    thread.close()


def test_retries_waits_what_retries_backoff_ms_computes() -> None:
    delays: list[int | None] = []

    class Recording(StubBroker):
        def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
            delays.append(delay)
            return message

    retries = Retries(max_retries=10, min_backoff=500, max_backoff=60_000)
    broker = Recording(middleware=[retries])
    dramatiq.actor(actor_name="a", queue_name=QUEUE, broker=broker)(lambda: None)
    for done in (0, 1, 4):
        random.seed(done)
        expected = adapter.retries_backoff_ms(retries, done)
        random.seed(done)
        message = MessageProxy(_message(retries=done))
        retries.after_process_message(broker, message, exception=ValueError())  # type: ignore[no-untyped-call]
        assert delays[-1] == expected


def test_prefetch_per_thread_sets_what_each_consumer_holds() -> None:
    broker = StubBroker(middleware=[adapter.PrefetchPerThread(1)])
    broker.declare_queue(QUEUE)
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=10)
    worker.start()
    try:
        assert worker.consumers[QUEUE].prefetch == 3
    finally:
        worker.stop(timeout=1000)


def test_a_worker_process_handles_stop_signals_as_graceful_stop_only_expects() -> None:
    # Installed before the broker module (herald.sender.worker:setup) is imported; a second
    # signal raises SystemExit from the main thread.
    source = inspect.getsource(dramatiq_cli.worker_process)
    assert source.index("signal.signal(signal.SIGTERM, termhandler)") < source.index(
        "import_broker(args.broker)"
    )
    assert "signal.signal(signal.SIGHUP, termhandler)" in source
    assert "return sys.exit(RET_KILLED)" in source


def test_dramatiqs_command_line_reads_the_senders_arguments_as_meant() -> None:
    parser = dramatiq_cli.make_argument_parser()  # type: ignore[no-untyped-call]
    parsed = parser.parse_args(dramatiq_args(Settings(provider_timeout=1.5), 2, 3))
    assert (parsed.broker, parsed.processes, parsed.threads) == ("herald.sender.worker:setup", 2, 3)
    assert parsed.worker_shutdown_timeout == 3500
    assert parsed.forks == ["herald.sender.sidecar:serve", "herald.sender.sweeper:run"]
    assert parsed.skip_logging
    assert inspect.signature(dramatiq_cli.main).parameters.keys() == {"args"}


def test_retried_options_are_what_retries_counts() -> None:
    retries = Retries(max_retries=1)
    broker = StubBroker(middleware=[retries])
    dramatiq.actor(actor_name="a", queue_name=QUEUE, broker=broker)(lambda: None)
    message = MessageProxy(_message(**adapter.retried(1)))
    retries.after_process_message(broker, message, exception=ValueError())  # type: ignore[no-untyped-call]
    assert message.failed  # its one retry was spent already
