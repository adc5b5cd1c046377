"""The sender's own small HTTP server: /metrics for all its processes, /healthz and /readyz."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from prometheus_client import CONTENT_TYPE_LATEST

from herald.core.broker import make_redis
from herald.core.connections import DirectConnection
from herald.core.health import ALIVE, HEALTH_PATH, READY_PATH, Check, readiness
from herald.core.logs import configure_logging
from herald.core.metrics import exposition
from herald.core.settings import Settings


def _json(body: dict[str, str]) -> bytes:
    return json.dumps(body).encode()


def dependency_checks(settings: Settings) -> dict[str, Check]:
    """What the sender needs to work: PostgreSQL and Redis, each checked on a fresh connection."""

    def postgresql() -> None:
        conn = DirectConnection(settings)
        try:
            conn.execute("SELECT 1", ())
        finally:
            conn.close()

    def redis() -> None:
        client = make_redis(settings)
        try:
            client.ping()
        finally:
            client.close()

    return {"postgresql": postgresql, "redis": redis}


class _Handler(BaseHTTPRequestHandler):
    checks: ClassVar[dict[str, Check]] = {}  # serve() subclasses with the real ones

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, exposition())
        elif self.path == HEALTH_PATH:
            self._answer(200, "application/json", _json(ALIVE))
        elif self.path == READY_PATH:
            ready, body = readiness(self.checks)
            self._answer(200 if ready else 503, "application/json", _json(body))
        else:
            body = {"title": "Not Found", "description": f"no route {self.path}"}
            self._answer(404, "application/json", _json(body))

    def _answer(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would drown the worker logs


def make_server(host: str, port: int, checks: dict[str, Check]) -> ThreadingHTTPServer:
    """The sidecar's server on host:port, /readyz asking checks; serve_forever() runs it."""
    handler = type("Handler", (_Handler,), {"checks": checks})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve() -> None:
    """Dramatiq fork function: serve until the sender stops."""
    settings = Settings()
    configure_logging(settings, "sender")
    checks = dependency_checks(settings)
    make_server("0.0.0.0", settings.sender_metrics_port, checks).serve_forever()
