"""Overload protection: bounded work in flight per worker, the excess answered 503 at once.

A gunicorn gevent worker reads every request of every connection it holds (up to
`--connections`), and each one then waits its turn for the CPU and the group commit: past the
worker's capacity, that wait is the queue, and it grows with the connections. Admission keeps
at most `limit` requests in the app per worker; the next is answered 503 with Retry-After before
Falcon sees it (no body read, no key check, no database, no Redis), so a request is either
worked on promptly or refused at once. A refused request stored nothing: the app never ran.

In a closed loop (a client that sends again as soon as it is answered), a refusal at once is
an invitation to send again at once, and refusals would take the CPU the admitted requests need.
So after a 503 the connection is not read from again for `pause` seconds: a client that honours
Retry-After (1 s) never notices, one that does not is paced, and its next request is still
answered within the pause plus a prompt answer. docs/operations.md, "Overload".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from herald.core.auth import PUBLIC_ROUTES

# Seconds a refused client should wait before trying again (the Retry-After of every 503).
RETRY_AFTER_SECONDS = 1

_BODY = orjson.dumps(
    {
        "title": "Service overloaded",
        "description": "The service is at capacity and did not process this request; nothing "
        "was stored. Retry after the number of seconds in Retry-After.",
    }
)
_HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(_BODY))),
    ("Retry-After", str(RETRY_AFTER_SECONDS)),
]
_STATUS = "503 Service Unavailable"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Refusal:
    """The 503's body; closing it (after gunicorn wrote it) holds the connection for a pause."""

    __slots__ = ("_pause",)

    def __init__(self, pause: float) -> None:
        self._pause = pause

    def __iter__(self) -> Iterator[bytes]:
        yield _BODY

    def close(self) -> None:
        # gunicorn calls close() after the answer is sent and before it reads the connection's
        # next request: a greenlet asleep here costs no CPU, and a flood of retries is paced.
        if self._pause > 0:
            time.sleep(self._pause)


class Admission:
    """WSGI middleware: at most `limit` requests of this process in `app` at once; the next is
    answered 503 + Retry-After without running `app`. Health, readiness and metrics are never
    refused (an orchestrator must see an overloaded worker as alive and ready) nor counted."""

    def __init__(self, app: WsgiApp, limit: int, pause: float = 0.0) -> None:
        self._app = app
        self._limit = limit
        self._pause = pause
        self._in_flight = 0
        self._shed = 0
        # Greenlets of one worker never preempt each other between a read and a write of the
        # count; the lock is for threads (tests, other servers), and uncontended it is cheap.
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Requests of this process in the app now."""
        return self._in_flight

    @property
    def shed(self) -> int:
        """Requests this process has refused with 503 so far."""
        return self._shed

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        if environ.get("PATH_INFO") in PUBLIC_ROUTES:
            return self._app(environ, start_response)
        with self._lock:
            admitted = self._in_flight < self._limit
            if admitted:
                self._in_flight += 1
            else:
                self._shed += 1
        if not admitted:
            start_response(_STATUS, list(_HEADERS))
            return _Refusal(self._pause)
        try:
            # Falcon does all of a request's work here and returns the finished body.
            return self._app(environ, start_response)
        finally:
            with self._lock:
                self._in_flight -= 1
