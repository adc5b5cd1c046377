"""The whole stack as processes, driven over HTTP only: post, deliver, observe."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.core.broker import SEND_QUEUE, enqueue_send, make_broker
from herald.core.settings import Settings
from herald.sender.backlog import queue_depth
from tests.stack import HTTP, Stack, running_stack, sender_outcomes, wait_for


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    with running_stack(settings) as stack:
        yield stack


@pytest.fixture
def idle_stack(settings: Settings) -> Iterator[Stack]:
    """The stack with no sender yet: messages wait in the queue until the test starts one."""
    with running_stack(settings, sender=False) as stack:
        yield stack


def post(stack: Stack, body: str = "hello", destination: str = "+15550100") -> str:
    return stack.post(body, destination)


def post_batch(stack: Stack, count: int, prefix: str = "b") -> list[str]:
    items = [{"destination": "+15550100", "body": f"{prefix}{i}"} for i in range(count)]
    answer = stack.http.post(f"{stack.api}/messages/batch", json={"messages": items})
    assert answer.status_code == 202, answer.text
    return [item["id"] for item in answer.json()["messages"]]


def post_singly(stack: Stack, count: int, prefix: str = "s") -> list[str]:
    return [post(stack, body=f"{prefix}{i}") for i in range(count)]


def record(stack: Stack, message_id: str) -> dict[str, Any]:
    answer = stack.http.get(f"{stack.status}/message/{message_id}")
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def provider_stats(stack: Stack) -> dict[str, int]:
    stats: dict[str, int] = HTTP.get(f"{stack.provider}/stats").json()
    return stats


def configure_provider(stack: Stack, **config: object) -> None:
    answer = HTTP.put(f"{stack.provider}/config", json=config)
    assert answer.status_code == 200, answer.text


def delivered(stack: Stack) -> list[dict[str, str]]:
    answer: list[dict[str, str]] = HTTP.get(f"{stack.provider}/messages").json()
    return answer


def test_posted_message_is_sent_once_and_its_status_is_true(stack: Stack) -> None:
    message_id = post(stack, body="first")
    stack.wait_status(message_id, "sent")
    full = record(stack, message_id)
    assert full["attempts"] == 1
    assert full["sent_at"] is not None
    assert full["last_error"] is None
    assert stack.http.get(f"{stack.status}/message/{message_id}/status").json() == {
        "status": "sent"
    }
    assert delivered(stack) == [{"id": message_id, "destination": "+15550100", "body": "first"}]


def test_500_concurrent_posts_are_all_sent_exactly_once(settings: Settings) -> None:
    with running_stack(settings, sender=False) as stack:
        stack.start_sender(processes=2, threads=8)
        with ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(lambda i: post(stack, body=f"m{i}"), range(500)))
        assert len(set(ids)) == 500
        wait_for(lambda: provider_stats(stack)["unique"] >= 500, 60, "500 deliveries")
        for message_id in ids:
            stack.wait_status(message_id, "sent", timeout=10)
        stats = provider_stats(stack)
        assert stats == {"received": 500, "unique": 500, "duplicates": 0}
        assert sorted(m["id"] for m in delivered(stack)) == sorted(ids)


def test_one_sender_thread_delivers_a_backlog_in_acceptance_order(idle_stack: Stack) -> None:
    # Single posts, and batches larger than one queue message carries (SEND_BATCH_MAX).
    ids = post_singly(idle_stack, 30) + post_batch(idle_stack, 100) + post_singly(idle_stack, 10)
    idle_stack.start_sender(processes=1, threads=1)
    wait_for(lambda: len(delivered(idle_stack)) == 140, 30, "140 deliveries")
    assert [m["id"] for m in delivered(idle_stack)] == ids


def test_one_sender_thread_keeps_acceptance_order_while_posting(settings: Settings) -> None:
    with running_stack(settings, threads=1) as stack:
        ids = [post(stack, body=f"n{i}") for i in range(60)]
        wait_for(lambda: len(delivered(stack)) == 60, 30, "60 deliveries")
        assert [m["id"] for m in delivered(stack)] == ids


def test_transient_failures_are_retried_to_success(stack: Stack) -> None:
    configure_provider(stack, fail_next=2, fail_status=503)
    message_id = post(stack)
    stack.wait_status(message_id, "sent")
    full = record(stack, message_id)
    assert full["attempts"] == 3
    assert provider_stats(stack)["unique"] == 1


def test_retry_after_is_honoured(settings: Settings) -> None:
    # The cap (HERALD_MAX_BACKOFF_MS) must be above the provider's ask for it to be honoured.
    with running_stack(settings.model_copy(update={"max_backoff_ms": 5_000})) as stack:
        configure_provider(stack, fail_next=1, fail_status=429, retry_after="1")
        started = time.monotonic()
        message_id = post(stack)
        stack.wait_status(message_id, "sent")
        # A lower bound only: the retry waited at least what the provider asked for.
        assert time.monotonic() - started >= 0.9
        assert record(stack, message_id)["attempts"] == 2


def test_retry_after_is_capped_by_max_backoff(stack: Stack) -> None:
    configure_provider(stack, fail_next=1, fail_status=429, retry_after="3600")
    message_id = post(stack)
    stack.wait_status(message_id, "sent", timeout=10)
    assert record(stack, message_id)["attempts"] == 2


def test_permanent_failure_fails_fast_with_last_error(stack: Stack) -> None:
    configure_provider(stack, fail_next=1, fail_status=400)
    message_id = post(stack)
    stack.wait_status(message_id, "failed")
    full = record(stack, message_id)
    # Fast: failed by its first attempt, with no backoff or retry before it (the retry test
    # above shows a transient error's retry, which would have made this 2).
    assert full["attempts"] == 1
    assert "400" in full["last_error"]
    assert provider_stats(stack)["unique"] == 0


def test_a_batchs_failed_messages_go_on_alone_to_a_retry_or_the_dead_letter_set(
    settings: Settings,
) -> None:
    # One thread: the batch's sends go one at a time, in order, so the first is the one failing.
    with running_stack(settings, threads=1) as stack:
        configure_provider(stack, fail_next=1, fail_status=400)
        refused, accepted = post_batch(stack, 2, "p")
        stack.wait_status(accepted, "sent")
        configure_provider(stack, fail_next=1, fail_status=503)
        retried, unharmed = post_batch(stack, 2, "t")
        stack.wait_status(retried, "sent")
        stack.wait_status(unharmed, "sent")
        assert record(stack, refused)["status"] == "failed"
        assert "400" in record(stack, refused)["last_error"]
        assert [record(stack, i)["attempts"] for i in (refused, accepted, retried, unharmed)] == [
            1, 1, 2, 1
        ]  # fmt: skip
        client = make_broker(stack.settings).client
        dead = f"{stack.settings.redis_namespace}:{SEND_QUEUE}.XQ"
        (dead_id,) = client.zrange(dead, 0, -1)
        letter = json.loads(client.hget(f"{dead}.msgs", dead_id) or b"{}")
        assert (letter["actor_name"], letter["args"]) == ("send_message", [refused])
        assert provider_stats(stack) == {"received": 3, "unique": 3, "duplicates": 0}


def test_exhausted_retries_end_failed_in_the_dead_letter_set(stack: Stack) -> None:
    configure_provider(stack, fail_next=100, fail_status=503)
    message_id = post(stack)
    stack.wait_status(message_id, "failed")
    full = record(stack, message_id)
    assert full["attempts"] == stack.settings.max_retries + 1
    assert "503" in full["last_error"]
    dead = make_broker(stack.settings).client.zcard(f"{stack.settings.redis_namespace}:send.XQ")
    assert dead == 1


def test_a_provider_hanging_past_the_timeout_is_retried(stack: Stack) -> None:
    hang_ms = stack.settings.provider_timeout * 1000 * 2
    configure_provider(stack, latency_ms=hang_ms)
    message_id = post(stack)
    wait_for(lambda: record(stack, message_id)["status"] == "retrying", 20, "a timed-out attempt")
    assert "no answer" in record(stack, message_id)["last_error"]
    configure_provider(stack, latency_ms=0)
    stack.wait_status(message_id, "sent")
    assert record(stack, message_id)["attempts"] >= 2


def test_a_duplicate_queue_message_does_not_send_again(stack: Stack) -> None:
    first = post(stack, body="once")
    stack.wait_status(first, "sent")
    enqueue_send(make_broker(stack.settings), first)
    # The sender counts the duplicate once it has handled it: turned away by its claim.
    wait_for(lambda: sender_outcomes(stack).get("skipped") == 1, 30, "the duplicate handled")
    assert sender_outcomes(stack).get("sent") == 1
    assert provider_stats(stack) == {"received": 1, "unique": 1, "duplicates": 0}


def test_a_message_canceled_while_queued_is_never_sent(idle_stack: Stack) -> None:
    canceled = post(idle_stack, body="never")
    answer = idle_stack.http.post(f"{idle_stack.api}/messages/{canceled}/cancel")
    assert answer.json() == {"id": canceled, "status": "canceled"}
    idle_stack.start_sender()
    kept = post(idle_stack, body="kept")
    idle_stack.wait_status(kept, "sent")
    assert [m["id"] for m in delivered(idle_stack)] == [kept]
    assert idle_stack.status_of(canceled) == "canceled"


def test_manual_retry_sends_a_failed_message(stack: Stack) -> None:
    configure_provider(stack, fail_next=1, fail_status=400)
    message_id = post(stack)
    stack.wait_status(message_id, "failed")
    answer = stack.http.post(f"{stack.api}/messages/{message_id}/retry")
    assert (answer.status_code, answer.json()) == (202, {"id": message_id, "status": "queued"})
    stack.wait_status(message_id, "sent")
    assert record(stack, message_id)["attempts"] == 2


@pytest.mark.parametrize("post_all", [post_singly, post_batch])
def test_sigterm_to_the_sender_group_finishes_in_flight_sends_and_loses_nothing(
    idle_stack: Stack, post_all: Callable[[Stack, int], list[str]]
) -> None:
    configure_provider(idle_stack, latency_ms=300)
    # As one queue message each, or as one batch: a stopping worker hands back what it has not
    # started of a batch.
    # 4 sends in flight at 300 ms drain 120 in 9 s: far more than a slow start of the sender
    # on a loaded machine (its health check can answer seconds after its first sends).
    ids = post_all(idle_stack, 120)
    sender = idle_stack.start_sender(processes=1, threads=4)
    wait_for(lambda: provider_stats(idle_stack)["unique"] >= 4, 20, "first deliveries")
    started = time.monotonic()
    os.killpg(sender.popen.pid, signal.SIGTERM)  # as honcho or systemd do: the whole group
    assert sender.popen.wait(idle_stack.settings.provider_timeout + 5) == 0
    assert time.monotonic() - started <= idle_stack.settings.provider_timeout + 5
    assert "Killing worker" not in sender.output()
    # Nothing was left claimed: every message is sent or still waiting for a sender.
    statuses = [idle_stack.status_of(i) for i in ids]
    assert set(statuses) <= {"sent", "queued"}
    # Every finished message was acknowledged before the exit (acks are sent in batches): Redis
    # holds exactly the messages still queued, none held by the stopped worker.
    client = make_broker(idle_stack.settings).client
    namespace = idle_stack.settings.redis_namespace
    depth = queue_depth(client, namespace, SEND_QUEUE, 60)
    assert depth["in_progress"] == depth["orphaned"] == 0
    assert depth["waiting"] == statuses.count("queued") > 0
    configure_provider(idle_stack, latency_ms=0)
    idle_stack.start_sender()
    for message_id in ids:
        idle_stack.wait_status(message_id, "sent")
    assert provider_stats(idle_stack) == {"received": 120, "unique": 120, "duplicates": 0}


def test_a_worker_holds_no_more_queue_messages_than_its_threads(idle_stack: Stack) -> None:
    # Dramatiq's default would fetch twice as many: a batch's worth of ids each, kept from
    # every other process and from pods the HPA adds.
    configure_provider(idle_stack, latency_ms=300)
    ids = post_singly(idle_stack, 12)
    idle_stack.start_sender(processes=1, threads=2)
    wait_for(lambda: provider_stats(idle_stack)["unique"] >= 1, 20, "first deliveries")
    depth = queue_depth(
        make_broker(idle_stack.settings).client, idle_stack.settings.redis_namespace, SEND_QUEUE, 60
    )
    assert depth["in_progress"] <= 2
    assert depth["waiting"] >= 12 - 2 - provider_stats(idle_stack)["unique"]
    configure_provider(idle_stack, latency_ms=0)
    for message_id in ids:
        idle_stack.wait_status(message_id, "sent")


def test_sender_metrics_count_outcomes_and_show_the_backlog(stack: Stack) -> None:
    configure_provider(stack, fail_next=1, fail_status=503)
    message_id = post(stack)
    stack.wait_status(message_id, "sent")
    url = f"http://127.0.0.1:{stack.settings.sender_metrics_port}/metrics"

    def exported() -> str | None:
        text = HTTP.get(url).text
        # The sweeper sets the queue gauges, then the status ones: wait for a complete cycle.
        complete = 'herald_queue_messages{queue="send",state="waiting"}' in text
        return text if complete and 'herald_messages{status="queued"}' in text else None

    text = wait_for(exported, stack.settings.sweep_interval + 5, "backlog gauges")
    assert 'herald_sends_total{outcome="sent"} 1.0' in text
    assert 'herald_sends_total{outcome="retry"} 1.0' in text
    assert 'herald_provider_responses_total{code="503"} 1.0' in text
    assert "herald_delivery_latency_seconds_count 1.0" in text
    assert 'herald_messages{status="queued"}' in text
    assert HTTP.get(url.replace("/metrics", "/healthz")).json() == {"status": "ok"}
    assert HTTP.get(url.replace("/metrics", "/readyz")).json() == {"status": "ready"}


def test_a_scheduled_message_goes_out_after_its_time_and_within_2_s(stack: Stack) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    answer = stack.http.post(
        f"{stack.api}/messages",
        json={"destination": "d", "body": "later", "send_at": send_at.isoformat()},
    )
    assert answer.json()["status"] == "scheduled"
    message_id = answer.json()["id"]
    stack.wait_status(message_id, "sent", timeout=20)
    sent_at = datetime.fromisoformat(record(stack, message_id)["sent_at"])
    assert send_at <= sent_at <= send_at + timedelta(seconds=2)


def post_at(stack: Stack, body: str, send_at: datetime) -> str:
    fields = {"destination": "d", "body": body, "send_at": send_at.isoformat()}
    answer = stack.http.post(f"{stack.api}/messages", json=fields)
    assert answer.json()["status"] == "scheduled", answer.text
    message_id: str = answer.json()["id"]
    return message_id


def test_a_canceled_scheduled_message_is_never_sent(stack: Stack) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=1)
    message_id = post_at(stack, "never", send_at)
    assert stack.http.post(f"{stack.api}/messages/{message_id}/cancel").status_code == 200
    # Due after the canceled one: once it is sent, the promoter has passed the canceled
    # one's send_at (it promotes in send_at order) and had its chance to send it.
    kept = post_at(stack, "kept", send_at + timedelta(seconds=0.5))
    stack.wait_status(kept, "sent")
    assert stack.status_of(message_id) == "canceled"
    assert [m["id"] for m in delivered(stack)] == [kept]
