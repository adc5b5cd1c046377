"""Queue depth and pending messages, measured by the leading sweeper only.

One exporter for the whole deployment, whatever the number of sender replicas: a sum over pods
never double counts, and the HorizontalPodAutoscaler reads the backlog from this one series.
"""

from __future__ import annotations

import time

import redis
from sqlalchemy import Engine, func, select

from herald.core.broker import SEND_QUEUE, ids_held
from herald.core.metrics import BacklogMetrics
from herald.core.statuses import PENDING, Status
from herald.core.tables import messages

_m = messages.c

# A worker that has not touched Redis for this long is gone (live ones poll every few ms).
STALE_WORKER_MS = 10_000


def queue_depth(client: redis.Redis[bytes], namespace: str, queue: str) -> dict[str, int]:
    """Herald messages in Dramatiq's Redis structures for one queue, by state.

    A Dramatiq message carries one id or a batch (send_messages); each id counts.

    waiting: in the queue list; in_progress: fetched by a live worker, not yet acknowledged;
    delayed: retries waiting out their backoff (in the delay queue or held by a live worker);
    orphaned: held by a worker that stopped heartbeating (Dramatiq puts them back in the queue
    after its heartbeat timeout); dead: the dead-letter set.
    """
    prefix = f"{namespace}:"
    depth = {
        "waiting": ids_held(client, prefix + queue),
        "delayed": ids_held(client, f"{prefix}{queue}.DQ"),
        "dead": ids_held(client, f"{prefix}{queue}.XQ", "zset"),
        "in_progress": 0,
        "orphaned": 0,
    }
    beats = dict(client.zrange(f"{prefix}__heartbeats__", 0, -1, withscores=True))
    now_ms = time.time() * 1000
    acks = f"{prefix}__acks__."
    for key in client.scan_iter(match=f"{acks}*", count=1000):
        name = key.decode()
        for suffix, state in ((f".{queue}.DQ", "delayed"), (f".{queue}", "in_progress")):
            if name.endswith(suffix):
                worker = name[len(acks) : -len(suffix)].encode()
                alive = now_ms - beats.get(worker, 0) < STALE_WORKER_MS
                depth[state if alive else "orphaned"] += ids_held(client, name, "set")
                break
    return depth


def pending_counts(engine: Engine) -> dict[Status, int]:
    """Messages still owed a delivery, by status; each count walks a small partial index."""
    counts = dict.fromkeys((Status.SCHEDULED, *PENDING), 0)
    with engine.connect() as conn:
        for statuses in ((Status.SCHEDULED,), PENDING):
            rows = conn.execute(
                select(_m.status, func.count()).where(_m.status.in_(statuses)).group_by(_m.status)
            )
            counts.update({Status(status): count for status, count in rows})
    return counts


def measure(
    metrics: BacklogMetrics, client: redis.Redis[bytes], namespace: str, engine: Engine
) -> dict[str, int]:
    """Set the backlog gauges; the send queue's depth, for the log and the tests."""
    depth = queue_depth(client, namespace, SEND_QUEUE)
    for state, count in depth.items():
        metrics.queue.labels(SEND_QUEUE, state).set(count)
    for status, count in pending_counts(engine).items():
        metrics.messages.labels(status.value).set(count)
    return depth
