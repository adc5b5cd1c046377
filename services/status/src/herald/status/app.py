"""Wiring of the status service."""

from __future__ import annotations

from sqlalchemy import Engine

from herald.core.auth import authentication
from herald.core.db import make_engine, ping_database
from herald.core.settings import Settings
from herald.core.web import App, create_base_app
from herald.status.queries import Reader
from herald.status.resources import MessageDetail, MessageList, MessageStatus


def create_app(settings: Settings, engine: Engine, reader: Reader) -> App:
    """The status app: reads by id through reader, the rest through the engine's pool."""
    app = create_base_app("status", {"postgresql": lambda: ping_database(engine)})
    # Keys are read, never written: the status service's database role is read-only.
    app.add_middleware(authentication(settings, engine, records_use=False))
    app.add_route("/message/list", MessageList(engine))
    app.add_route("/message/{message_id}/status", MessageStatus(reader))
    app.add_route("/message/{message_id}", MessageDetail(reader))
    return app


def app_factory(settings: Settings) -> App:
    """Build the app and its connections; gunicorn calls this in each worker after the fork."""
    # Reads retry once on a dead connection (herald.core.db), so no ping before each one.
    return create_app(settings, make_engine(settings, pre_ping=False), Reader(settings))
