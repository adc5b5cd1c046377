"""A real HTTP server on a free loopback port, answering as a test scripts it.

For provider answers the stand-in (herald.messageapp) never gives: a redirect, a huge body.
It records every call it gets (method, path, the caller's port) and how many body bytes it
managed to write before the caller hung up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What an endless body is written in; made once, so writing it allocates nothing new.
BLOCK = b"x" * (64 * 1024)


@dataclass(frozen=True)
class Answer:
    """One scripted answer: status, headers, and body (or stream_bytes of BLOCKs, chunked).

    pause_s: a pause halfway through body, so that its end arrives well after the headers.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream_bytes: int = 0
    pause_s: float = 0.0


@dataclass(frozen=True)
class Call:
    """One request as the server saw it; port is the caller's, the same for a reused connection."""

    method: str
    path: str
    port: int


class ScriptedServer(ThreadingHTTPServer):
    """Answers each path with its script in turn, repeating the last; unknown paths get 404."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.scripts: dict[str, list[Answer]] = {}
        self.calls: list[Call] = []
        self.streamed = 0  # body bytes of stream answers the caller took before hanging up
        self.lock = threading.Lock()

    def next_answer(self, call: Call) -> Answer:
        with self.lock:
            self.calls.append(call)
            script = self.scripts.get(call.path) or [Answer(404)]
            return script.pop(0) if len(script) > 1 else script[0]

    def calls_to(self, path: str) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if call.path == path]


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as real providers do: a reused connection shows as one caller port.
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test's assertions say what matters."""

    def _answer(self) -> None:
        answer = self.server.next_answer(Call(self.command, self.path, self.client_address[1]))
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.stream_bytes:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._stream(answer.stream_bytes)
        else:
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            half = len(answer.body) // 2
            self.wfile.write(answer.body[:half])
            time.sleep(answer.pause_s)
            self.wfile.write(answer.body[half:])

    def _stream(self, total: int) -> None:
        self.close_connection = True
        head = b"%x\r\n" % len(BLOCK)
        try:
            for _ in range(total // len(BLOCK)):
                self.wfile.write(head)
                self.wfile.write(BLOCK)
                self.wfile.write(b"\r\n")
                with self.server.lock:
                    self.server.streamed += len(BLOCK)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller read what it wanted and hung up


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """A ScriptedServer serving in a thread of its own until the block ends."""
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, name="scripted-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
