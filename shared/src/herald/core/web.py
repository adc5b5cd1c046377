"""What the HTTP deployables share: JSON errors, health and readiness, and serving on gunicorn."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import falcon
import falcon.asgi
import orjson
from falcon.util import wrap_sync_to_async_unsafe
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import ParseException
from pydantic import ValidationError

from herald.core.adapters.gunicorn import (
    accept_connections_with,
    answer_errors_with,
    invalid_header_message,
)
from herald.core.admission import EagerAcceptServer, admitted
from herald.core.db import DatabaseUnavailable
from herald.core.health import ALIVE, HEALTH_PATH, READY_PATH, Check, readiness
from herald.core.idempotency import IDEMPOTENCY_KEY_HEADER, INVALID_KEY_DESCRIPTION
from herald.core.logs import RequestIds, gunicorn_logconfig
from herald.core.metrics import HttpMetrics, MetricsResource, mark_dead, use_multiprocess_dir
from herald.core.settings import Settings

log = logging.getLogger(__name__)

ORJSON = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)

# Seconds a client should wait before trying again after a 503.
RETRY_AFTER_SECONDS = 1


# An unread request body up to this size is read and dropped before an error is answered, so the
# client has finished sending and the kept-alive connection stays usable; a larger one is not
# worth it (gunicorn then closes the connection).
DRAIN_BYTES = 1024 * 1024


def json_error_body(req: Any, resp: Any, error: falcon.HTTPError) -> None:
    """Every error is JSON with a title and a description, the framework's own 404/405 included.

    Falcon's error serializer for WSGI and ASGI apps alike (an ASGI server drains an unread
    body itself); the WSGI deployables use json_error.
    """
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"title": error.title, "description": error.description or error.title}


def json_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """json_error_body, after reading and dropping a small unread body (keep-alive stays usable)."""
    if req.content_length is not None and req.content_length <= DRAIN_BYTES:
        _drain(req)
    json_error_body(req, resp, error)


def _drain(req: falcon.Request) -> None:
    # A client that is gone, or whose body is broken, loses the connection anyway.
    with contextlib.suppress(OSError, ParseException):
        req.bounded_stream.exhaust()


def _malformed_body(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    # gunicorn raises while the app reads a broken chunked body: the client's fault, not ours.
    raise falcon.HTTPBadRequest(title="Malformed request body", description=str(error))


# gunicorn answers what never reaches the app (a bad request line, headers too large, a
# malformed header) itself; Herald's contract makes every error JSON (see serve()).
_BAD_KEY = invalid_header_message(IDEMPOTENCY_KEY_HEADER)


def _json_error_answer(status_int: int, reason: str, mesg: str) -> tuple[int, str, bytes]:
    if status_int == 400 and mesg == _BAD_KEY:
        # A control character in the key: gunicorn refuses the header, the contract says 422.
        status_int, reason, mesg = 422, "Unprocessable Entity", INVALID_KEY_DESCRIPTION
    return status_int, reason, json.dumps({"title": reason, "description": mesg or reason}).encode()


def _database_unavailable(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    log.warning("database unavailable: %s", error.__class__.__name__)
    raise falcon.HTTPServiceUnavailable(
        title="Database unavailable",
        description="PostgreSQL cannot be reached right now; nothing was stored. Retry later.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def describe(error: ValidationError) -> str:
    """A one-line account of every violation, naming each field by its path."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _unprocessable(
    req: falcon.Request, resp: falcon.Response, error: ValidationError, params: dict[str, Any]
) -> None:
    raise falcon.HTTPUnprocessableEntity(title="Invalid request", description=describe(error))


def unknown_message(message_id: str) -> falcon.HTTPNotFound:
    """The 404 of every service for an id that names no message (or cannot name one)."""
    return falcon.HTTPNotFound(title="Unknown message", description=f"no message {message_id!r}")


# Falcon's WSGI app with its default request and response types.
App = falcon.App[falcon.Request, falcon.Response]


class Health:
    """GET /healthz: the process is alive and serving."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = ALIVE

    on_head = on_get  # HEAD: the same answer without its body


class Ready:
    """GET /readyz: 200 when every dependency answers, else 503 naming the ones that do not."""

    def __init__(self, checks: dict[str, Check]) -> None:
        self._checks = checks

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, body = readiness(self._checks)
        if not ready:
            title, description = body["title"], body["description"]
            raise falcon.HTTPServiceUnavailable(
                title=title, description=description, retry_after=RETRY_AFTER_SECONDS
            )
        resp.media = body

    on_head = on_get  # HEAD: the same answer without its body


class _OnLoop:
    """A resource's GET and HEAD as coroutines, as an ASGI app wants them.

    They run on the app's loop itself, so whatever they call must not block (the stand-in's
    readiness checks nothing).
    """

    def __init__(self, resource: Health | Ready) -> None:
        self.on_get = wrap_sync_to_async_unsafe(resource.on_get)
        self.on_head = wrap_sync_to_async_unsafe(resource.on_head)


def add_health_routes(app: falcon.App[Any, Any], checks: dict[str, Check]) -> None:
    """/healthz and /readyz (GET and HEAD) on a WSGI app, or on an ASGI one."""
    for path, resource in ((HEALTH_PATH, Health()), (READY_PATH, Ready(checks))):
        app.add_route(path, _OnLoop(resource) if isinstance(app, falcon.asgi.App) else resource)


def create_base_app(service: str, checks: dict[str, Check]) -> App:
    """A Falcon app with JSON errors, 503 on database outages, metrics and health routes."""
    app = falcon.App(middleware=(RequestIds(), HttpMetrics(service)))
    app.set_error_serializer(json_error)
    # Answers serialized by orjson (several times faster than the standard library's json).
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = ORJSON
    app.add_error_handler(DatabaseUnavailable, _database_unavailable)
    # One handler for every schema violation, of a body or of a query: 422.
    app.add_error_handler(ValidationError, _unprocessable)
    app.add_error_handler(ParseException, _malformed_body)
    add_health_routes(app, checks)
    app.add_route("/metrics", MetricsResource())
    return app


class _Server(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called in each worker after the fork, so pools and sockets are the worker's own.
        return self._factory()


def _child_exit(server: Any, worker: Any) -> None:
    mark_dead(worker.pid)


def serve(
    factory: Callable[[], App],
    *,
    service: str,
    bind: str,
    workers: int,
    connections: int,
    settings: Settings,
    max_in_flight: int | None = None,
    extra: Iterable[tuple[str, Any]] = (),
) -> None:
    """Run factory's app on gunicorn until SIGTERM/SIGINT; in-flight requests finish first.

    max_in_flight: at most that many requests per worker in the app, the next refused at once
    (herald.core.admission); None: no bound (the hello-world baseline).

    Each worker is gunicorn's gevent worker: a request is a greenlet, and what it waits on
    (PostgreSQL through psycopg, Redis, the group commit's futures) is cooperative, provided
    the process called herald.core.green.patch_standard_library() first. Chosen on
    measurements against gthread (docs/performance.md): no OS thread switch or GIL hand-off
    per request to meet the batch writer.
    """
    answer_errors_with(_json_error_answer, falcon.MEDIA_JSON)
    accept_connections_with(EagerAcceptServer)  # herald.core.admission says why
    with tempfile.TemporaryDirectory(prefix="herald-metrics-") as metrics_dir:
        use_multiprocess_dir(settings, metrics_dir)
        options: dict[str, Any] = {
            "bind": bind,
            "workers": workers,
            "worker_class": "gevent",
            "worker_connections": connections,
            # Leave well inside the deployables' shutdown bound (provider timeout + 5 s).
            "graceful_timeout": 4,
            # Longer than any proxy's idle timeout (nginx upstream keepalive: 60 s), so the
            # server never closes a kept-alive connection the proxy is about to reuse.
            "keepalive": 75,
            "accesslog": None,
            "loglevel": settings.log_level.lower(),
            "logconfig_dict": gunicorn_logconfig(settings, service),
            "child_exit": _child_exit,
            # Several Herald servers share a host; none needs gunicorn's control socket.
            "control_socket_disable": True,
            **dict(extra),
        }
        _Server(admitted(factory, service, max_in_flight, settings), options).run()


def http_main(
    argv: list[str] | None,
    *,
    service: str,
    description: str | None,
    default_bind: str,
    build: Callable[[Settings], App],
    pool: Callable[[Settings], tuple[int, int, int]],
) -> None:
    """The command line of an HTTP deployable: --bind, --workers, --connections, then serve().

    pool: its workers, connections and requests in flight per worker, from the settings.
    """
    settings = Settings()
    workers, connections, max_in_flight = pool(settings)
    parser = argparse.ArgumentParser(prog=f"herald-{service}", description=description)
    parser.add_argument("--bind", default=default_bind, help="HOST:PORT (default %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=workers, help="processes (default %(default)s)"
    )
    parser.add_argument(
        "--connections", type=int, default=connections,
        help="requests served at once per process (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    serve(
        lambda: build(settings),
        service=service,
        bind=args.bind,
        workers=args.workers,
        connections=args.connections,
        settings=settings,
        max_in_flight=max_in_flight,
    )
