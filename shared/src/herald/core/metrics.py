"""Prometheus metrics shared by the deployables, correct across forked worker processes.

Each process writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set by the deployable's
CLI before it forks); a scrape of any process aggregates all of them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from herald.core.adapters.prometheus import choose_value_storage
from herald.core.settings import Settings

if TYPE_CHECKING:  # falcon is herald-core[web]'s: the sender's metrics need no web framework
    import falcon

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def use_multiprocess_dir(settings: Settings, path: str) -> None:
    """Make metrics created from now on (here and in forked children) write to files in path."""
    settings.export_metrics_dir(path)
    # prometheus-client picks its value storage once, at import; pick again now the dir is known.
    choose_value_storage()


def mark_dead(pid: int) -> None:
    """Drop a finished process's live gauges from what a scrape reports."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def scrape_registry() -> CollectorRegistry:
    """A registry that reads every process's samples from the multiprocess directory."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def exposition() -> bytes:
    """The current metrics of all processes, in Prometheus text format."""
    return generate_latest(scrape_registry())


class MetricsResource:
    """GET /metrics."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = exposition()

    on_head = on_get  # HEAD: the same answer without its body


def refusals(service: str) -> Callable[[], None]:
    """Count one request refused by overload protection (herald.core.admission)."""
    child = Counter(
        "herald_overload_refused_total",
        "Requests answered 503 by overload protection, before the app ran.",
        ["service"],
        registry=None,  # multiprocess: samples live in files, the scrape collects them
    ).labels(service)
    return child.inc


class HttpMetrics:
    """Falcon middleware counting requests and timing them, by route template, method and code."""

    def __init__(self, service: str) -> None:
        self._requests = Counter(
            "herald_http_requests_total",
            "HTTP requests answered.",
            ["service", "route", "method", "code"],
            registry=None,  # multiprocess: samples live in files, the scrape collects them
        )
        self._latency = Histogram(
            "herald_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["service", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._service = service
        self._clock: Callable[[], float] = time.perf_counter
        import falcon  # herald-core[web]: only the HTTP deployables build this middleware

        self._methods = falcon.COMBINED_METHODS

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = self._clock()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        route = req.uri_template or "unmatched"
        # A client may send any method token: only HTTP's own become label values.
        method = req.method if req.method in self._methods else "other"
        self._counter(route, method, resp.status_code).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            self._timer(route, method).observe(self._clock() - started)

    # labels() checks and formats its values and takes a lock on every call; the children, once
    # made, are kept here by their (few) label values.
    @functools.cache  # noqa: B019  # one middleware per process, kept for its lifetime
    def _counter(self, route: str, method: str, code: int) -> Any:
        return self._requests.labels(self._service, route, method, str(code))

    @functools.cache  # noqa: B019  # one middleware per process, kept for its lifetime
    def _timer(self, route: str, method: str) -> Any:
        return self._latency.labels(self._service, route, method)


# End to end, a message may wait out retries: its latency buckets reach into minutes.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


@dataclass(frozen=True)
class SenderMetrics:
    """What a sender worker process records about its deliveries."""

    sends: Counter  # by outcome: sent, retry, failed, skipped
    provider_responses: Counter  # by code: the HTTP status, or timeout / connection_error
    provider_latency: Histogram
    delivery_latency: Histogram  # accepted (created_at) -> provider accepted
    dead_letters: Counter
    in_flight: Gauge


def sender_metrics() -> SenderMetrics:
    """Create the sender's metrics (once per worker process, after the fork)."""
    return SenderMetrics(
        sends=Counter(
            "herald_sends_total", "Delivery attempts by outcome.", ["outcome"], registry=None
        ),
        provider_responses=Counter(
            "herald_provider_responses_total",
            "Provider answers by HTTP code (or timeout, connection_error).",
            ["code"],
            registry=None,
        ),
        provider_latency=Histogram(
            "herald_provider_request_duration_seconds",
            "Time for one provider call.",
            buckets=LATENCY_BUCKETS,
            registry=None,
        ),
        delivery_latency=Histogram(
            "herald_delivery_latency_seconds",
            "From acceptance (202) to the provider accepting the message.",
            buckets=DELIVERY_BUCKETS,
            registry=None,
        ),
        dead_letters=Counter(
            "herald_dead_letters_total", "Messages that ended failed.", registry=None
        ),
        in_flight=Gauge(
            "herald_sends_in_flight",
            "Provider calls under way.",
            multiprocess_mode="livesum",
            registry=None,
        ),
    )


@dataclass(frozen=True)
class BacklogMetrics:
    """Queue depth and pending messages: exported by the one leading sweeper only."""

    queue: Gauge  # by queue and state: waiting, in_progress, delayed, lost, orphaned, dead
    messages: Gauge  # by status, for the statuses still owed a delivery
    leading: Gauge  # 1 in the pod whose sweeper leads (and so exports the two above), else 0


def backlog_metrics() -> BacklogMetrics:
    """Create the backlog gauges (in the sweeper process)."""
    return BacklogMetrics(
        queue=Gauge(
            "herald_queue_messages",
            "Messages in Dramatiq's Redis queues by queue and state (each id of a batch counts).",
            ["queue", "state"],
            multiprocess_mode="livemax",
            registry=None,
        ),
        messages=Gauge(
            "herald_messages",
            "Messages in PostgreSQL by status (statuses still owed a delivery).",
            ["status"],
            multiprocess_mode="livemax",
            registry=None,
        ),
        leading=Gauge(
            "herald_sweeper_leading",
            "1 if this pod's sweeper leads (and exports the backlog gauges), else 0.",
            multiprocess_mode="livemax",
            registry=None,
        ),
    )
