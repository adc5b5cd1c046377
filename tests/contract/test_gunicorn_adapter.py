"""What herald.core.adapters.gunicorn relies on in gunicorn still holds (no server, fast)."""

from __future__ import annotations

import inspect
import io
import json
import logging
import socket
from importlib.metadata import version

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http.errors import InvalidHeader, InvalidRequestLine
from gunicorn.http.parser import RequestParser
from gunicorn.workers.base import Worker
from gunicorn.workers.ggevent import GeventWorker

from herald.core.adapters import gunicorn as adapter


def test_the_installed_gunicorn_is_the_version_the_adapter_was_written_for() -> None:
    assert version("gunicorn") == adapter.VERSION


def test_write_error_still_takes_the_socket_status_reason_and_message() -> None:
    parameters = list(inspect.signature(util.write_error).parameters)
    assert parameters == ["sock", "status_int", "reason", "mesg"]


def test_the_gevent_worker_answers_its_errors_through_the_base_workers_handler() -> None:
    assert GeventWorker.handle_error is Worker.handle_error


def test_a_workers_error_answer_is_the_adapters_once_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(util, "write_error", util.write_error)  # restored afterwards

    def answer(status: int, reason: str, message: str) -> tuple[int, str, bytes]:
        return status + 1, reason.upper(), json.dumps({"said": message}).encode()

    adapter.answer_errors_with(answer, "application/json")
    worker = Worker.__new__(Worker)  # handle_error needs only a log when there is no request
    worker.log = logging.getLogger("test-gunicorn-adapter")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker.handle_error(None, ours, ("192.0.2.1", 1), InvalidRequestLine("GARBAGE"))
        ours.shutdown(socket.SHUT_WR)
        head, _, body = theirs.recv(65536).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 401 BAD REQUEST"
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body)["said"].startswith("Invalid Request Line")


def test_a_refused_header_is_named_as_invalid_header_message_says() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x01b\r\nContent-Length: 0\r\n\r\n"
    parser = RequestParser(Config(), io.BytesIO(raw), ("192.0.2.1", 1))
    with pytest.raises(InvalidHeader) as refused:
        next(iter(parser))
    assert str(refused.value) == adapter.invalid_header_message("Idempotency-Key")


def test_the_gevent_worker_builds_its_servers_from_the_module_global_stream_server() -> None:
    # accept_connections_with replaces that global: the worker must still look it up at run.
    from gunicorn.workers import ggevent

    assert isinstance(ggevent.StreamServer, type)
    assert "StreamServer(" in inspect.getsource(GeventWorker.run)
