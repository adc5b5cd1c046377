"""Dramatiq entry point: `dramatiq herald.sender.worker:setup` builds the broker and actors.

Dramatiq calls setup() in each worker process after the fork, so pools and clients belong to
the process that uses them.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware.asyncio import AsyncIO

from herald.core.adapters.dramatiq import PrefetchPerThread, graceful_stop_only
from herald.core.broker import SEND_ACTOR, SEND_BATCH_ACTOR, SEND_QUEUE, make_broker
from herald.core.logs import configure_logging
from herald.core.metrics import sender_metrics
from herald.core.settings import Settings
from herald.sender.delivery import Delivery
from herald.sender.provider import PermanentError, Provider


class DeliveryControl(dramatiq.Middleware):
    """Tells the delivery what the worker decides: sends in flight (its threads), and the stop."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._delivery.start(worker.worker_threads)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._delivery.stop()


def declare_actors(broker: dramatiq.Broker, delivery: Delivery) -> None:
    """Register the send actors on broker; a PermanentError dead-letters at once (no retries).

    That includes RetriesExhausted: the row's attempts, not the queue message's retry count,
    decide which attempt is the last (herald.sender.delivery).

    A batch's own failure (PostgreSQL down before its claims) retries the whole batch: the
    claims let each id be sent once.
    """
    single = dramatiq.actor(
        broker=broker, actor_name=SEND_ACTOR, queue_name=SEND_QUEUE, throws=(PermanentError,)
    )
    single(delivery.send)
    batch = dramatiq.actor(broker=broker, actor_name=SEND_BATCH_ACTOR, queue_name=SEND_QUEUE)
    batch(delivery.send_batch)


def build(settings: Settings) -> tuple[dramatiq.Broker, Delivery]:
    """A broker with the send actor declared on it, wired to fresh pools."""
    broker = make_broker(settings)
    # The event loop thread each worker process runs its deliveries on (see delivery.py).
    broker.add_middleware(AsyncIO())
    # Queue messages a worker process holds unacknowledged: one per thread. Dramatiq's default
    # is twice the threads; a queue message of a batch carries up to SEND_BATCH_MAX ids, so the
    # first process to fetch would hold most of a backlog while the others, and any pod the HPA
    # adds, had nothing to take.
    broker.add_middleware(PrefetchPerThread(1))
    metrics = sender_metrics()
    # Every write goes through a batcher (four kinds), one batch each at a time, each on its
    # own connection: four connections serve any number of threads.
    delivery = Delivery(settings, broker, Provider(settings, metrics), metrics)
    broker.add_middleware(DeliveryControl(delivery))
    declare_actors(broker, delivery)
    return broker, delivery


def setup() -> None:
    """Build Settings once for this process and make its broker Dramatiq's (the only set_broker)."""
    settings = Settings()
    configure_logging(settings, "sender")
    broker, _ = build(settings)
    dramatiq.set_broker(broker)
    graceful_stop_only()
