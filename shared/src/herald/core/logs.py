"""Structured logs: one JSON object per line, carrying the request id and message id if known."""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from typing import Any

import falcon
from pythonjsonlogger.json import JsonFormatter

from herald.core.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
FIELDS = "%(levelname)s %(name)s %(process)d %(message)s"


class _Context(logging.Filter):
    """Stamp each record with the request id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def json_formatter(service: str) -> JsonFormatter:
    """The formatter every Herald process logs with."""
    return JsonFormatter(
        FIELDS,
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": service},
        timestamp="time",  # ISO 8601, UTC
    )


def configure_logging(settings: Settings, service: str) -> None:
    """Make every handler of the root logger (or a new stderr one) write JSON lines."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(json_formatter(service))
        handler.addFilter(_Context())
    root.setLevel(settings.log_level.upper())


def gunicorn_logconfig(settings: Settings, service: str) -> dict[str, Any]:
    """gunicorn's logconfig_dict: its own and the app's logs as JSON on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": json_formatter, "service": service}},
        "filters": {"context": {"()": _Context}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


class RequestIds:
    """Falcon middleware: adopt the caller's X-Request-ID (or make one), log it, echo it back."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header(REQUEST_ID_HEADER)
        # 128 random bits as hex, like uuid4().hex, without building a UUID per request.
        request_id = given if given and len(given) <= 128 else os.urandom(16).hex()
        req.context.request_id = request_id
        req.context.request_id_token = _request_id.set(request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id is not None:
            resp.set_header(REQUEST_ID_HEADER, request_id)
        token = getattr(req.context, "request_id_token", None)
        if token is not None:
            _request_id.reset(token)
