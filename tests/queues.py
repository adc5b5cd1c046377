"""What waits on the send queue in Redis, read the way Dramatiq stores it."""

from __future__ import annotations

import json

from dramatiq.brokers.redis import RedisBroker

from herald.core.adapters.dramatiq import queue_keys
from herald.core.broker import SEND_QUEUE


def queued_ids(broker: RedisBroker) -> list[str]:
    """The message ids waiting on the send queue, in queue order (a batch's ids in its order)."""
    keys = queue_keys(broker.namespace, SEND_QUEUE)
    redis_ids = broker.client.lrange(keys.queue, 0, -1)
    bodies = [broker.client.hget(keys.messages, rid) for rid in redis_ids]
    ids: list[str] = []
    for body in bodies:
        carried = json.loads(body or b"{}")["args"][0]
        ids += [carried] if isinstance(carried, str) else carried
    return ids
