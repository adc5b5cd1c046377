"""Logs carrying the request id and message id if known: JSON lines, or readable console lines.

JSON (the default) is for containers and CI, where a collector parses each line; the console
format (HERALD_LOG_FORMAT=console) is for a person watching `make run` in a terminal.
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from pythonjsonlogger.json import JsonFormatter

from herald.core.settings import Settings

if TYPE_CHECKING:  # falcon is herald-core[web]'s: the sender logs without it
    import falcon

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_tenant: ContextVar[str | None] = ContextVar("tenant", default=None)
FIELDS = "%(levelname)s %(name)s %(process)d %(message)s"

# The attributes every LogRecord has; whatever else a record carries came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# The ids a reader follows across lines come first, in this order, whatever else is extra.
_IDS = ("request_id", "message_id")
# ANSI SGR codes: dim, green, yellow, red, bold red; cyan for the ids.
_LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
_ID_COLOUR = "36"


class _Context(logging.Filter):
    """Stamp each record with the request id and tenant of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        if not hasattr(record, "tenant"):
            record.tenant = _tenant.get()
        return True


def bind_tenant(tenant: str) -> Token[str | None]:
    """Stamp tenant on every log line of the request being served, until unbind_tenant."""
    return _tenant.set(tenant)


def unbind_tenant(token: Token[str | None]) -> None:
    """End bind_tenant: a kept-alive connection's next request may be another tenant's."""
    _tenant.reset(token)


def json_formatter(service: str) -> JsonFormatter:
    """One JSON object per line, the format of containers and CI."""
    return JsonFormatter(
        FIELDS,
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": service},
        timestamp="time",  # ISO 8601, UTC
    )


def _paint(colour: str, text: str) -> str:
    return f"\x1b[{colour}m{text}\x1b[0m"


class ConsoleFormatter(logging.Formatter):
    """One coloured line per record for a terminal: time, level, service, logger, message,
    then the request and message ids and any other extra fields as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname
        head = (
            f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d} "
            f"{_paint(_LEVEL_COLOURS.get(level, '0'), f'{level:<7}')} "
            f"{self._service} {_paint('2', record.name)}"
        )
        line = " ".join([head, record.getMessage(), *self._fields(record)])
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line

    @staticmethod
    def _fields(record: logging.LogRecord) -> list[str]:
        """key=value for each extra field that has a value, the ids first and coloured."""
        extra = {
            k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and v is not None
        }
        ids = [_paint(_ID_COLOUR, f"{k}={extra.pop(k)}") for k in _IDS if k in extra]
        return ids + [f"{k}={v}" for k, v in extra.items()]


def formatter(log_format: str, service: str) -> logging.Formatter:
    """The formatter every Herald process logs with, as HERALD_LOG_FORMAT chose."""
    return ConsoleFormatter(service) if log_format == "console" else json_formatter(service)


def configure_logging(settings: Settings, service: str) -> None:
    """Make every handler of the root logger (or a new stderr one) write Herald's log lines."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(formatter(settings.log_format, service))
        handler.addFilter(_Context())
    root.setLevel(settings.log_level.upper())


def gunicorn_logconfig(settings: Settings, service: str) -> dict[str, Any]:
    """gunicorn's logconfig_dict: its own and the app's logs on stderr, in HERALD_LOG_FORMAT."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "herald": {"()": formatter, "log_format": settings.log_format, "service": service}
        },
        "filters": {"context": {"()": _Context}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "herald",
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
