"""The sender's own small HTTP server: /metrics for all its processes, and /healthz."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from herald.core.logs import configure_logging
from herald.core.metrics import exposition
from herald.core.settings import Settings


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, exposition())
        elif self.path == "/healthz":
            self._answer(200, "application/json", b'{"status": "ok"}')
        else:
            body = {"title": "Not Found", "description": f"no route {self.path}"}
            self._answer(404, "application/json", json.dumps(body).encode())

    def _answer(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would drown the worker logs


def serve() -> None:
    """Dramatiq fork function: serve until the sender stops."""
    settings = Settings()
    configure_logging(settings, "sender")
    server = ThreadingHTTPServer(("0.0.0.0", settings.sender_metrics_port), _Handler)
    server.daemon_threads = True
    server.serve_forever()
