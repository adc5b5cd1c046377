"""Faults the sweeper repairs: a retry dropped in a Redis blip, a frozen leader, batches retried
while PostgreSQL is down. Each on private servers, with the real processes."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import redis

from dev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from herald.core.adapters.dramatiq import held_sets, queue_keys
from herald.core.broker import SEND_QUEUE
from herald.core.settings import Settings
from herald.sender.backlog import queue_depth
from tests.chaos.figures import Figures
from tests.chaos.outcomes import audit, configure_provider, wait_all_sent
from tests.stack import HTTP, Process, Stack, running_stack, sender_outcomes, start, wait_for


@contextmanager
def stack_with(settings: Settings) -> Iterator[Stack]:
    """api, status and the stand-in on the private servers (no sender); logs shown on failure."""
    with running_stack(settings, sender=False) as stack:
        try:
            yield stack
        except BaseException:
            print(stack.logs())
            raise


def post(stack: Stack, **fields: object) -> str:
    return stack.post("b", "d", **fields)


def test_a_retry_a_worker_held_through_a_redis_blip_is_still_sent(
    chaos_settings: Settings, redis_server: EmbeddedRedis, figures: Figures
) -> None:
    # Dramatiq empties a worker's in-memory delay queue on a Redis connection error; the retry's
    # entry stays in that live worker's ack set, where no consumer will ever fetch it again.
    settings = chaos_settings.model_copy(update={"min_backoff_ms": 4000, "max_backoff_ms": 6000})
    with stack_with(settings) as stack:
        configure_provider(stack.provider, fail_next=1, fail_status=503, retry_after="5")
        stack.start_sender(processes=1, threads=2)
        message_id = post(stack)
        stack.wait_status(message_id, "retrying")
        client = redis_server.client()
        namespace = settings.redis_namespace

        def held() -> list[str]:  # a worker's set of delay-queue messages exists while not empty
            return [key for _, delayed, key in held_sets(client, namespace, SEND_QUEUE) if delayed]

        wait_for(held, 10, "the retry held by the worker")
        failed = time.monotonic()
        redis_server.kill()  # a blip: Redis comes back with its data (AOF), the worker lives on
        time.sleep(3)
        redis_server.start()
        # The retry was due 5 s after the failure; the sweeper finds it lost stuck_after past
        # its eta, and its row unchanged for stuck_after + the longest backoff.
        stack.wait_status(message_id, "sent", timeout=40)
        figures(sent_after_failure_s=round(time.monotonic() - failed, 1))
        assert stack.processes["sender"].popen.poll() is None
        result = audit(str(settings.database_url), stack.provider, [message_id])
        assert (result.lost, result.duplicate_effects) == (0, 0)


def _gauges(port: int) -> dict[str, float]:
    """This sender pod's leading flag and its backlog of scheduled messages, from /metrics."""
    text = HTTP.get(f"http://127.0.0.1:{port}/metrics").text
    found = {}
    for name, pattern in (
        ("leading", r"^herald_sweeper_leading (\S+)$"),
        ("scheduled", r'^herald_messages\{status="scheduled"\} (\S+)$'),
    ):
        match = re.search(pattern, text, re.MULTILINE)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def _second_sender(stack: Stack) -> tuple[Process, int]:
    port = free_port()
    env = stack.settings.model_copy(update={"sender_metrics_port": port}).child_environment()
    health = f"http://127.0.0.1:{port}/healthz"
    sender = start("sender-b", ["herald-sender", "--processes", "1"], env, stack.log_dir, health)
    stack.processes["sender-b"] = sender
    return sender, port


def test_a_frozen_leader_hands_over_and_a_former_leader_exports_no_backlog(
    chaos_settings: Settings, figures: Figures
) -> None:
    settings = chaos_settings.model_copy(update={"leader_timeout": 3.0})
    with stack_with(settings) as stack:
        later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        for _ in range(3):
            post(stack, send_at=later)
        pods = {stack.start_sender(processes=1).popen.pid: stack.settings.sender_metrics_port}
        sender_b, port_b = _second_sender(stack)
        pods[sender_b.popen.pid] = port_b

        def leader() -> int | None:
            leading = [pid for pid, port in pods.items() if _gauges(port)["leading"] == 1]
            return leading[0] if len(leading) == 1 else None

        frozen = wait_for(leader, 20, "one leading sweeper")
        other = next(pid for pid in pods if pid != frozen)
        wait_for(lambda: _gauges(pods[frozen])["scheduled"] == 3, 20, "the leader's backlog")
        assert _gauges(pods[other]) == {"leading": 0, "scheduled": 0}
        os.killpg(frozen, signal.SIGSTOP)  # a hung node: its sockets stay open, nothing answers
        try:
            stopped = time.monotonic()
            wait_for(lambda: _gauges(pods[other])["leading"] == 1, 30, "another pod to lead")
            takeover_s = time.monotonic() - stopped
            wait_for(lambda: _gauges(pods[other])["scheduled"] == 3, 20, "the new leader's backlog")
        finally:
            os.killpg(frozen, signal.SIGCONT)
        # Back from its freeze, the former leader finds its session ended and stops exporting.
        wait_for(lambda: _gauges(pods[frozen]) == {"leading": 0, "scheduled": 0}, 20, "a follower")
        assert _gauges(pods[other]) == {"leading": 1, "scheduled": 3}
        figures(takeover_s=round(takeover_s, 1), leader_timeout_s=settings.leader_timeout)
        assert takeover_s < 3 * settings.leader_timeout


def test_batches_retried_while_postgres_is_down_keep_their_count_and_are_sent_once(
    chaos_settings: Settings, postgres: EmbeddedPostgres, figures: Figures
) -> None:
    # A batch whose claims fail is enqueued again by Dramatiq's Retries with a fresh Redis id;
    # the backlog (the HPA, the sweeper's arithmetic) must still count each of its ids.
    with stack_with(chaos_settings) as stack:
        items = [{"destination": "d", "body": f"b{i}"} for i in range(640)]
        answer = stack.http.post(f"{stack.api}/messages/batch", json={"messages": items})
        assert answer.status_code == 202, answer.text
        ids = [message["id"] for message in answer.json()["messages"]]
        postgres.stop()
        stack.start_sender(processes=1, threads=8)
        client: redis.Redis[bytes] = redis.Redis.from_url(str(chaos_settings.redis_url))
        dead = queue_keys(chaos_settings.redis_namespace, SEND_QUEUE).dead
        # With PostgreSQL down every retry fails too, until Retries dead-letters each batch.
        wait_for(lambda: client.zcard(dead) == len(ids) // 64, 60, "every batch retried out")
        depth = queue_depth(client, chaos_settings.redis_namespace, SEND_QUEUE, 60)
        assert depth["dead"] == len(ids), depth
        postgres.start()
        delivered_s = wait_all_sent(str(chaos_settings.database_url), ids, timeout=60)
        result = audit(str(chaos_settings.database_url), stack.provider, ids)
        figures(**result.figures(), all_sent_after_s=round(delivered_s, 1))
        figures(skipped_queue_messages=sender_outcomes(stack).get("skipped", 0))
        assert (result.lost, result.duplicate_effects) == (0, 0)
