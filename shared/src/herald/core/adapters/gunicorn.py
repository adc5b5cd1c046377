"""gunicorn where Herald needs more than its public API. Written for gunicorn 27.0.1 (pinned).

gunicorn answers what never reaches the app (a bad request line, headers too large, a
malformed header) itself, as HTML, through one function, gunicorn.util.write_error(sock,
status_int, reason, mesg): Worker.handle_error, which every worker class inherits, looks it up
on the module at each call. There is no setting or hook for the format, so that function is
replaced. And the message of its InvalidHeader names the header as the parser refused it,
which is how Herald tells a refused Idempotency-Key from other bad headers. Its gevent worker
builds its listening servers from the module global gunicorn.workers.ggevent.StreamServer
(accepting one connection per loop turn when there are several workers): no setting chooses
another class, so that global is replaced.
tests/contract/test_gunicorn_adapter.py checks each fact against the installed gunicorn.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from gunicorn import util
from gunicorn.http.errors import InvalidHeader
from gunicorn.workers import ggevent

VERSION = "27.0.1"

# (status, reason, message) as gunicorn chose them -> the (status, reason, body) to answer.
ErrorAnswer = Callable[[int, str, str], tuple[int, str, bytes]]


def answer_errors_with(answer: ErrorAnswer, content_type: str) -> None:
    """From now on gunicorn answers its own errors, in this process and its forks, with answer."""

    def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
        status, phrase, body = answer(status_int, reason, mesg)
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        util.write_nonblock(sock, head.encode("latin-1") + body)

    util.write_error = write_error


def invalid_header_message(name: str) -> str:
    """The message gunicorn gives when it refuses header name (a control character in it)."""
    return str(InvalidHeader(name.upper()))


def accept_connections_with(server_class: type[Any]) -> None:
    """From now on gunicorn's gevent workers listen with server_class (a gevent StreamServer)."""
    ggevent.StreamServer = server_class
