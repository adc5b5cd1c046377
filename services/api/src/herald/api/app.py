"""Wiring of the ingest API: routes, error handling and its dependencies."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from herald.api.ingest import Ingest
from herald.api.outcomes import IngestOutcomes
from herald.api.ratelimit import RateLimits
from herald.api.resources import Cancel, Messages, MessagesBatch, Retry
from herald.core.auth import authentication
from herald.core.broker import make_broker, ping_redis
from herald.core.db import make_engine, ping_database
from herald.core.settings import Settings
from herald.core.web import App, create_base_app


def create_app(settings: Settings, engine: Engine, broker: RedisBroker) -> App:
    """The ingest app on the given PostgreSQL engine and Redis broker."""
    app = create_base_app(
        "api",
        {"postgresql": lambda: ping_database(engine), "redis": lambda: ping_redis(broker)},
    )
    # The api records each key's last use (at most once a minute per key, in the background).
    app.add_middleware(authentication(settings, engine, records_use=True))
    app.add_middleware(IngestOutcomes())  # messages accepted and refused, per tenant
    ingest = Ingest(settings, engine, broker)
    limits = RateLimits(settings, broker.client)  # the broker's Redis: its pool and timeouts
    app.add_route("/messages", Messages(ingest, limits))
    app.add_route("/messages/batch", MessagesBatch(ingest, limits))
    app.add_route("/messages/{message_id}/cancel", Cancel(ingest))
    app.add_route("/messages/{message_id}/retry", Retry(ingest))
    return app


def app_factory(settings: Settings) -> App:
    """Build the app and its pools; gunicorn calls this in each worker after the fork."""
    return create_app(settings, make_engine(settings), make_broker(settings))
