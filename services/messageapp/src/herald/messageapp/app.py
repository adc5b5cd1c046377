"""The stand-in provider's HTTP app: Herald's provider contract plus test-control routes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import falcon
import falcon.asgi
import falcon.media
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from herald.core.settings import Settings
from herald.core.web import ORJSON, add_health_routes, json_error_body
from herald.messageapp.behaviour import Behaviour, InvalidKnobs, Plan
from herald.messageapp.ledger import Delivery, Ledger

# Far above any message Herald sends (64 KiB), low enough that a runaway client cannot hurt.
MAX_BODY_BYTES = 1024 * 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"

App = falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]


def _bad_request(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Malformed request", description=description)


async def read_json(req: falcon.asgi.Request) -> object:
    """The request body parsed as JSON; 400 when it is not JSON, 413 when it is too large."""
    too_large = falcon.HTTPContentTooLarge(
        title="Body too large", description=f"the limit is {MAX_BODY_BYTES} bytes"
    )
    if (req.content_length or 0) > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    # Chunked bodies carry no length: count while reading instead of trusting a header.
    async for chunk in req.stream:
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad_request("the body is not valid UTF-8 JSON") from None


def _text(data: dict[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _bad_request(f"{name} must be a non-blank string")
    return value


async def read_delivery(req: falcon.asgi.Request) -> Delivery:
    """A well-formed POST /message as a Delivery, or 400 naming what is wrong."""
    key = req.get_header(IDEMPOTENCY_HEADER)
    if not key:
        raise _bad_request(f"the {IDEMPOTENCY_HEADER} header is required")
    data = await read_json(req)
    if not isinstance(data, dict):
        raise _bad_request("the body must be a JSON object")
    return Delivery(id=key, destination=_text(data, "destination"), body=_text(data, "body"))


def simulated_failure(plan: Plan, status: int) -> falcon.HTTPError:
    """The error a planned failure answers with; it carries Retry-After when one is configured."""
    headers = {"Retry-After": plan.retry_after} if plan.retry_after is not None else None
    return falcon.HTTPError(
        status,
        title="Simulated failure",
        description=f"the stand-in provider was told to answer {status}; nothing was recorded",
        headers=headers,
    )


class Message:
    """POST /message: the provider contract (latency, then fail or accept once per key)."""

    def __init__(self, ledger: Ledger, behaviour: Behaviour) -> None:
        self._ledger = ledger
        self._behaviour = behaviour

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        delivery = await read_delivery(req)
        plan = self._behaviour.plan()
        # asyncio.sleep, not time.sleep: hundreds of slow calls wait side by side on one loop.
        await asyncio.sleep(plan.delay_s)
        if plan.fail_status is not None:
            # A failed attempt has no effect and does not remember the key: a retry is new.
            self._ledger.failures += 1
            raise simulated_failure(plan, plan.fail_status)
        duplicate = self._ledger.accept(delivery)
        resp.media = {"status": "accepted", "id": delivery.id, "duplicate": duplicate}


class Stats:
    """GET /stats: received (= unique + duplicates), unique and duplicate accepted calls."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._ledger.stats()


class Messages:
    """GET /messages: unique deliveries in arrival order; DELETE /messages: forget them all."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = [delivery.as_json() for delivery in self._ledger.deliveries()]

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._ledger.reset()
        resp.status = falcon.HTTP_204


class Config:
    """GET /config: the current knobs; PUT /config: change some of them (all or nothing)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._behaviour.knobs.as_json()

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        patch = await read_json(req)
        try:
            knobs = self._behaviour.configure(patch)
        except InvalidKnobs as error:
            raise falcon.HTTPBadRequest(title="Invalid config", description=str(error)) from None
        resp.media = knobs.as_json()


class Reset:
    """POST /reset: forget every delivery and restore the knobs the process started with."""

    def __init__(self, ledger: Ledger, behaviour: Behaviour) -> None:
        self._ledger = ledger
        self._behaviour = behaviour

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._ledger.reset()
        self._behaviour.reset()
        resp.status = falcon.HTTP_204


class LedgerCollector(Collector):
    """The ledger's counts as Prometheus counters, read at each scrape (one process)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        stats = self._ledger.stats()
        calls = CounterMetricFamily(
            "herald_messageapp_calls", "POST /message calls by outcome.", labels=["outcome"]
        )
        calls.add_metric(["accepted"], stats["unique"])
        calls.add_metric(["duplicate"], stats["duplicates"])
        calls.add_metric(["failed"], self._ledger.failures)
        yield calls


class Metrics:
    """GET /metrics: the calls the stand-in answered, by outcome."""

    def __init__(self, ledger: Ledger) -> None:
        self._registry = CollectorRegistry()
        self._registry.register(LedgerCollector(ledger))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)


def create_app(settings: Settings, rng: random.Random | None = None) -> App:
    """A fresh provider (empty ledger, knobs from settings) with JSON errors on every route."""
    ledger = Ledger()
    behaviour = Behaviour(settings, rng)
    app: App = falcon.asgi.App()
    app.set_error_serializer(json_error_body)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = ORJSON
    app.add_route("/message", Message(ledger, behaviour))
    app.add_route("/stats", Stats(ledger))
    app.add_route("/messages", Messages(ledger))
    app.add_route("/config", Config(behaviour))
    app.add_route("/reset", Reset(ledger, behaviour))
    add_health_routes(app, {})  # it depends on nothing: ready as soon as it serves
    app.add_route("/metrics", Metrics(ledger))
    return app
