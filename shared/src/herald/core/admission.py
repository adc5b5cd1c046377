"""Overload protection: bounded work in flight per worker, the excess answered 503 quickly.

A gunicorn gevent worker reads every request of every connection it holds (up to
`--connections`), and each one then waits its turn for the CPU and the group commit: past the
worker's capacity that wait is the queue, it grows with the connections, and with ~1,000
requests in the app a worker's throughput collapses (measured: docs/performance.md). Admission
keeps at most `limit` requests in the app per worker. A request beyond it waits for a place, in
arrival order and costing no CPU, at most `wait` seconds (the queue-delay budget); if none
frees by then it is answered 503 with Retry-After, before Falcon sees it (no body read, no key
check, no database, no Redis): it stored nothing. So a worker that keeps up answers everyone,
late by at most the budget, and one that cannot sheds exactly what it could not do in time.

In a closed loop (a client that sends again as soon as it is answered), a refusal is an
invitation to send again at once, and refusals would take the CPU the admitted requests need.
So after a 503 the connection is not read from again for `pause` seconds: a client that honours
Retry-After (1 s) never notices, one that does not is paced, and its next request is still
answered within pause + wait + a prompt answer (< 1 s). docs/operations.md, "Overload".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from gevent.server import StreamServer  # type: ignore[import-untyped]  # no type hints

from herald.core.auth import PUBLIC_ROUTES
from herald.core.metrics import refusals
from herald.core.settings import Settings

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

# Connections a gunicorn gevent worker accepts per turn of its loop, while it has room.
ACCEPT_PER_TURN = 100

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
    """WSGI middleware: at most `limit` requests of this process in `app` at once; the next waits
    up to `wait` seconds for a place, else is answered 503 + Retry-After without running `app`.
    Health, readiness and metrics are never refused (an orchestrator must see an overloaded
    worker as alive and ready, and it can be scraped) nor counted."""

    def __init__(
        self,
        app: WsgiApp,
        limit: int,
        wait: float = 0.0,
        pause: float = 0.0,
        refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._app = app
        self._refused = refused  # a metric's inc()
        self._wait = wait
        self._pause = pause
        # Under gevent (the servers patch threading) a greenlet semaphore: waiters cost no CPU
        # and are woken in arrival order.
        self._places = threading.BoundedSemaphore(limit)
        self._in_flight = 0
        self._shed = 0

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
        if not self._admit():
            self._shed += 1
            self._refused()
            start_response(_STATUS, list(_HEADERS))
            return _Refusal(self._pause)
        self._in_flight += 1  # a greenlet is not preempted between its read and its write
        try:
            # Falcon does all of a request's work here and returns the finished body.
            return self._app(environ, start_response)
        finally:
            self._in_flight -= 1
            self._places.release()

    def _admit(self) -> bool:
        places = self._places
        if places.acquire(blocking=False):
            return True
        return self._wait > 0 and places.acquire(timeout=self._wait)


def admitted(
    factory: Callable[[], WsgiApp], service: str, limit: int | None, settings: Settings
) -> Callable[[], WsgiApp]:
    """factory's app behind Admission with settings' wait and pause; limit None: unbounded."""
    if limit is None:
        return factory
    wait, pause = settings.queue_wait_ms / 1000, settings.shed_pause_ms / 1000
    # Built in each worker after the fork, as the app and its metrics are.
    return lambda: Admission(factory(), limit, wait, pause, refusals(service))


class EagerAcceptServer(StreamServer):  # type: ignore[misc]
    """gevent's StreamServer, accepting up to ACCEPT_PER_TURN connections per turn of the loop.

    With several workers gunicorn sets max_accept = 1 (to spread connections over them). Under
    load a worker's loop turns ~100 times a second, so it took ~100 connections a second while
    hundreds waited unread in the kernel's accept queue for seconds, answered by nobody
    (measured with 2,000 connections: docs/performance.md). The pool still caps each worker at
    `--connections`, and a request accepted is answered: admitted, or refused with a 503.
    """

    @property
    def max_accept(self) -> int:
        return ACCEPT_PER_TURN

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        pass  # gunicorn's 1 is the very setting replaced here
