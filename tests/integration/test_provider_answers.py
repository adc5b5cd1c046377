"""The sender against real providers that answer oddly: the retry limit, redirects, huge bodies.

A Dramatiq worker runs the sender's own actors (herald.sender.worker.build) in this process, on
the real PostgreSQL and Redis. The provider is the stand-in process, or a scripted HTTP server
for the answers the stand-in never gives.
"""

from __future__ import annotations

import gc
import json
import os
import re
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, insert, select

from dev.embedded import free_port
from herald.core.broker import SEND_ACTOR, SEND_QUEUE, enqueue_send, enqueue_sends
from herald.core.ids import new_id
from herald.core.settings import Settings
from herald.core.statuses import Status
from herald.core.tables import messages
from herald.core.tenants import DEFAULT_TENANT
from herald.sender.provider import MAX_ERROR_CHARS
from herald.sender.worker import build
from tests.provider_server import Answer, scripted_server
from tests.stack import HTTP, launch, wait_for, wait_healthy

Row = tuple[str, int, str | None]
# Far more than any provider's error page: all of it read, it would show in the memory peak.
HUGE_BODY_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def messageapp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in provider as its own process, shared by this module's tests."""
    bind = f"127.0.0.1:{free_port()}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")}
    log_dir = tmp_path_factory.mktemp("messageapp")
    process = launch("messageapp", ["herald-messageapp", "--bind", bind], env, log_dir)
    wait_healthy(process, f"http://{bind}/healthz")
    yield f"http://{bind}"
    process.stop()


@pytest.fixture
def stand_in(messageapp: str) -> str:
    """The stand-in with no deliveries, failures or knobs left by an earlier test."""
    assert HTTP.post(f"{messageapp}/reset").status_code == 204
    return messageapp


def configure(provider: str, **knobs: object) -> None:
    answer = HTTP.put(f"{provider}/config", json=knobs)
    assert answer.status_code == 200, answer.text


def failed_calls(provider: str) -> int:
    """The calls the stand-in answered with a simulated failure."""
    metrics = HTTP.get(f"{provider}/metrics").text
    found = re.search(r'herald_messageapp_calls_total\{outcome="failed"\} (\S+)', metrics)
    assert found, metrics
    return int(float(found.group(1)))


@pytest.fixture(autouse=True)
def _collected() -> Iterator[None]:
    """After each test, collect its sender: its database connections go back to the server."""
    yield
    gc.collect()


@contextmanager
def running_sender(settings: Settings, provider_url: str) -> Iterator[RedisBroker]:
    """The send actors served by one worker thread in this process; the broker to enqueue on."""
    broker, _ = build(settings.model_copy(update={"provider_url": provider_url}))
    assert isinstance(broker, RedisBroker)
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()
        broker.close()


def new_message(engine: Engine, status: Status = Status.QUEUED, attempts: int = 0) -> str:
    message_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            insert(messages).values(
                id=message_id, destination="+15550100", body="hi", status=status, attempts=attempts
            )
        )
    return message_id


def row(engine: Engine, message_id: str) -> Row:
    columns = messages.c.status, messages.c.attempts, messages.c.last_error
    with engine.connect() as conn:
        found = conn.execute(select(*columns).where(messages.c.id == message_id)).one()
    return found.status, found.attempts, found.last_error


def outcome(engine: Engine, message_id: str, timeout: float = 15) -> Row:
    """The row once it is sent or failed."""

    def final() -> Row | None:
        now = row(engine, message_id)
        return now if now[0] in (Status.SENT, Status.FAILED) else None

    return wait_for(final, timeout, f"{message_id} sent or failed")


def dead_letters(broker: RedisBroker) -> list[str]:
    """The ids of the single sends in SEND_QUEUE's dead-letter set."""
    dead = f"{broker.namespace}:{SEND_QUEUE}.XQ"
    bodies = [broker.client.hget(f"{dead}.msgs", key) for key in broker.client.zrange(dead, 0, -1)]
    letters = [json.loads(body or b"{}") for body in bodies]
    return [letter["args"][0] for letter in letters if letter.get("actor_name") == SEND_ACTOR]


def as_batch(broker: RedisBroker, message_id: str) -> None:
    enqueue_sends(broker, [message_id])


def alone(broker: RedisBroker, message_id: str) -> None:
    enqueue_send(broker, message_id)


Enqueue = Callable[[RedisBroker, str], None]
EITHER_ACTOR = pytest.mark.parametrize("enqueue", [as_batch, alone], ids=["batch", "single"])


@EITHER_ACTOR
@pytest.mark.parametrize("retry_after", ["inf", "nan"])
def test_a_provider_asking_for_a_non_finite_wait_is_called_max_retries_plus_one_times(
    settings: Settings, engine: Engine, stand_in: str, enqueue: Enqueue, retry_after: str
) -> None:
    configure(stand_in, fail_next=1000, fail_status=503, retry_after=retry_after)
    message_id = new_message(engine)
    with running_sender(settings, stand_in) as broker:
        enqueue(broker, message_id)
        status, attempts, last_error = outcome(engine, message_id)
        assert (status, attempts) == ("failed", settings.max_retries + 1)
        wait_for(lambda: dead_letters(broker) == [message_id], 60, "its dead letter")
    assert last_error is not None
    assert last_error.startswith("HTTP 503")
    assert failed_calls(stand_in) == settings.max_retries + 1


def test_an_error_raised_inside_the_provider_call_is_an_outcome_and_logged(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's typo: aiohttp cannot IDNA-encode an empty label and raises UnicodeError,
    # which is neither a timeout nor one of its ClientErrors.
    message_id = new_message(engine)
    with running_sender(settings, "http://provider..example.com") as broker:
        enqueue_sends(broker, [message_id])
        status, attempts, last_error = outcome(engine, message_id)
        assert (status, attempts) == ("failed", settings.max_retries + 1)
        wait_for(lambda: dead_letters(broker) == [message_id], 60, "its dead letter")
    assert last_error is not None
    assert last_error.startswith("UnicodeError: ")
    assert "provider call raised UnicodeError" in caplog.messages


@EITHER_ACTOR
def test_the_retry_limit_counts_the_rows_attempts_not_the_queue_messages_retries(
    settings: Settings, engine: Engine, stand_in: str, enqueue: Enqueue
) -> None:
    # As after a sweeper re-enqueue: a fresh queue message (no retries counted) for a row that
    # has used every attempt but its last.
    configure(stand_in, fail_next=1000, fail_status=503)
    message_id = new_message(engine, Status.RETRYING, attempts=settings.max_retries)
    with running_sender(settings, stand_in) as broker:
        enqueue(broker, message_id)
        status, attempts, _ = outcome(engine, message_id)
        assert (status, attempts) == ("failed", settings.max_retries + 1)
        wait_for(lambda: dead_letters(broker) == [message_id], 60, "its dead letter")
    assert failed_calls(stand_in) == 1


def test_a_manual_retry_of_a_message_that_spent_its_retries_gets_a_full_budget_again(
    settings: Settings, engine: Engine, stand_in: str
) -> None:
    # An operator retries a message that failed after every attempt (a provider outage): it
    # gets the same max_retries + 1 attempts as a new message, while attempts counts them all.
    from herald.core.transitions import requeue_failed

    configure(stand_in, fail_next=1000, fail_status=503)
    spent = settings.max_retries + 1
    message_id = new_message(engine, Status.FAILED, attempts=spent)
    with engine.begin() as conn:
        assert requeue_failed(conn, DEFAULT_TENANT, message_id)
    with running_sender(settings, stand_in) as broker:
        enqueue_sends(broker, [message_id])
        status, attempts, _ = outcome(engine, message_id)
        assert (status, attempts) == ("failed", 2 * spent)
    assert failed_calls(stand_in) == spent


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_fails_the_message_and_is_never_followed(
    settings: Settings, engine: Engine, code: int
) -> None:
    with scripted_server() as provider:
        provider.scripts["/message"] = [Answer(code, {"Location": f"{provider.url}/elsewhere"})]
        provider.scripts["/elsewhere"] = [Answer(200, body=b'{"status": "accepted"}')]
        message_id = new_message(engine)
        with running_sender(settings, provider.url) as broker:
            enqueue_sends(broker, [message_id])
            status, attempts, last_error = outcome(engine, message_id)
            assert (status, attempts) == ("failed", 1)
            wait_for(lambda: dead_letters(broker) == [message_id], 60, "its dead letter")
        assert last_error is not None
        assert last_error.startswith(f"HTTP {code}")
        assert provider.calls_to("/elsewhere") == []


def test_a_huge_error_body_is_cut_short_and_the_answer_judged_at_once(
    settings: Settings, engine: Engine
) -> None:
    once = settings.model_copy(update={"max_retries": 0})
    with scripted_server() as provider:
        provider.scripts["/message"] = [Answer(503, stream_bytes=HUGE_BODY_BYTES)]
        message_id = new_message(engine)
        with running_sender(once, provider.url) as broker:
            tracemalloc.start()
            try:
                enqueue_sends(broker, [message_id])
                status, _, last_error = outcome(engine, message_id)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert status == "failed"
    # Everything this process allocated meanwhile, the sender's read of the body included.
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated at the peak"
    # Judged on the answer, within the provider timeout (which would say "no answer").
    assert last_error == f"HTTP 503: {'x' * MAX_ERROR_CHARS}"
    assert provider.streamed < HUGE_BODY_BYTES  # the sender hung up long before the end


def test_small_answers_leave_the_connection_to_the_next_call(
    settings: Settings, engine: Engine
) -> None:
    with scripted_server() as provider:
        # The bodies' ends arrive late: a connection is only reused if its body was awaited.
        provider.scripts["/message"] = [
            Answer(503, body=b"e" * 10_000, pause_s=0.05),
            Answer(200, body=b'{"status": "accepted"}', pause_s=0.05),
        ]
        message_ids = [new_message(engine) for _ in range(3)]
        with running_sender(settings, provider.url) as broker:
            enqueue_sends(broker, message_ids)
            statuses = [outcome(engine, message_id)[0] for message_id in message_ids]
        calls = provider.calls_to("/message")
    assert statuses == ["sent"] * 3
    # One thread sends one at a time: four calls (one retry), all on one connection.
    assert len(calls) == 4
    assert len({call.port for call in calls}) == 1
