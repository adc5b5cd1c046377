"""Wiring of the status service."""

from __future__ import annotations

from sqlalchemy import Engine

from herald.core.db import make_engine, ping_database
from herald.core.settings import Settings
from herald.core.web import App, create_base_app
from herald.status.resources import MessageDetail, MessageList, MessageStatus


def create_app(engine: Engine) -> App:
    """The status app on the given PostgreSQL engine."""
    app = create_base_app("status", {"postgresql": lambda: ping_database(engine)})
    app.add_route("/message/list", MessageList(engine))
    app.add_route("/message/{message_id}/status", MessageStatus(engine))
    app.add_route("/message/{message_id}", MessageDetail(engine))
    return app


def app_factory(settings: Settings) -> App:
    """Build the app and its pool; gunicorn calls this in each worker after the fork."""
    # Reads retry once on a dead connection (queries.read), so no ping before each one.
    return create_app(make_engine(settings, pre_ping=False))
