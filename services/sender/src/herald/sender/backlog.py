"""Queue depth and pending messages, measured by the leading sweeper only.

One exporter for the whole deployment, whatever the number of sender replicas: a sum over pods
never double counts, and the HorizontalPodAutoscaler reads the backlog from this one series.
"""

from __future__ import annotations

import time

import redis
from redis.commands.core import Script
from sqlalchemy import Engine, func, select

from herald.core.adapters.dramatiq import ETA_LUA_PATTERN, heartbeats, held_sets, queue_keys
from herald.core.broker import SEND_QUEUE, ids_held
from herald.core.metrics import BacklogMetrics
from herald.core.statuses import PENDING, Status
from herald.core.tables import messages

_m = messages.c

# A worker that has not touched Redis for this long is gone (live ones poll every few ms).
STALE_WORKER_MS = 10_000


# Each state of queue_depth, so that a pod that stops leading can zero every one of them.
QUEUE_STATES = ("waiting", "in_progress", "delayed", "lost", "orphaned", "dead")
# The statuses of rows still owed a delivery: what pending_counts measures and forget zeroes.
OWED = (Status.SCHEDULED, *PENDING)

# How many ids the delay queue's messages held by a worker carry: (due, lost). Due: a retry
# whose eta is after the cutoff, still waiting in that worker's memory. Lost: one whose eta is
# long past (a live worker forwards a due retry within DELAY_POLL_MS) or whose body is gone:
# the worker dropped it (Dramatiq empties its delay queue on a Redis connection error) or
# forwarded it without its ack reaching Redis.
_SPLIT_DELAYED = """
local due, lost = 0, 0
local cutoff = tonumber(ARGV[1])
for i = 2, #ARGV do
    local ids = tonumber(string.match(ARGV[i], '%.(%d+)$')) or 1
    local data = redis.call('hget', KEYS[1], ARGV[i])
    local eta = data and tonumber(string.match(data, 'ETA_PATTERN'))
    if eta and eta >= cutoff then due = due + ids else lost = lost + ids end
end
return {due, lost}
""".replace("ETA_PATTERN", ETA_LUA_PATTERN)
_SCAN_PAGE = 1_000


def _split_delayed(
    client: redis.Redis[bytes], split: Script, acks: str, messages: str, cutoff_ms: int
) -> tuple[int, int]:
    """(due, lost) ids of the delay-queue messages a live worker holds in the ack set acks."""
    due = lost = 0
    cursor = None
    while cursor != 0:
        cursor, members = client.sscan(acks, cursor or 0, count=_SCAN_PAGE)
        if members:
            page_due, page_lost = split(keys=[messages], args=[cutoff_ms, *members])
            due, lost = due + int(page_due), lost + int(page_lost)
    return due, lost


def queue_depth(
    client: redis.Redis[bytes], namespace: str, queue: str, lost_after_s: float
) -> dict[str, int]:
    """Herald messages in Dramatiq's Redis structures for one queue, by state.

    A Dramatiq message carries one id or a batch (send_messages); each id counts.

    waiting: in the queue list; in_progress: fetched by a live worker, not yet acknowledged;
    delayed: retries waiting out their backoff (in the delay queue, or held by a live worker
    until their eta); lost: delay-queue messages a live worker holds lost_after_s past their
    eta, which no consumer will ever deliver; orphaned: held by a worker that stopped
    heartbeating (Dramatiq puts them back in the queue after its heartbeat timeout); dead: the
    dead-letter set.
    """
    keys = queue_keys(namespace, queue)
    depth = dict.fromkeys(QUEUE_STATES, 0)
    depth["waiting"] = ids_held(client, keys.queue)
    depth["delayed"] = ids_held(client, keys.delayed)
    depth["dead"] = ids_held(client, keys.dead, "zset")
    beats = heartbeats(client, namespace)
    now_ms = time.time() * 1000
    cutoff_ms = int(now_ms - lost_after_s * 1000)
    split = client.register_script(_SPLIT_DELAYED)  # once per reading, not per worker
    for worker, delayed, key in held_sets(client, namespace, queue):
        if now_ms - beats.get(worker, 0) >= STALE_WORKER_MS:
            depth["orphaned"] += ids_held(client, key, "set")
        elif not delayed:
            depth["in_progress"] += ids_held(client, key, "set")
        else:
            due, lost = _split_delayed(client, split, key, keys.delayed_messages, cutoff_ms)
            depth["delayed"] += due
            depth["lost"] += lost
    return depth


def pending_counts(engine: Engine) -> dict[Status, int]:
    """Messages still owed a delivery, by status; each count walks a small partial index."""
    counts = dict.fromkeys(OWED, 0)
    with engine.connect() as conn:
        for statuses in ((Status.SCHEDULED,), PENDING):
            rows = conn.execute(
                select(_m.status, func.count()).where(_m.status.in_(statuses)).group_by(_m.status)
            )
            counts.update({Status(status): count for status, count in rows})
    return counts


def measure(
    metrics: BacklogMetrics,
    client: redis.Redis[bytes],
    namespace: str,
    engine: Engine,
    lost_after_s: float,
) -> dict[str, int]:
    """Set the backlog gauges; the send queue's depth, for the log and the tests."""
    depth = queue_depth(client, namespace, SEND_QUEUE, lost_after_s)
    counts = pending_counts(engine)
    for state, count in depth.items():
        metrics.queue.labels(SEND_QUEUE, state).set(count)
    for status, count in counts.items():
        metrics.messages.labels(status.value).set(count)
    return depth


def forget(metrics: BacklogMetrics) -> None:
    """Zero every backlog gauge: this pod no longer leads, or its figures are out of date.

    The gauges of every sender pod are summed (the HPA, the dashboard): a former leader that
    kept its last figures would add a stale backlog to the leader's.
    """
    for state in QUEUE_STATES:
        metrics.queue.labels(SEND_QUEUE, state).set(0)
    for status in OWED:
        metrics.messages.labels(status.value).set(0)
