"""The public contract over real HTTP on gunicorn: answers, errors, health and metrics."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from herald.core.schemas import MAX_REQUEST_BYTES
from herald.core.settings import Settings
from tests.badinput import BAD_INPUT, JSON, check_error
from tests.servers import REDIS_URL
from tests.stack import HTTP, Stack, running_stack


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[Stack]:
    """One stack for the module: these tests only read answers, they never wait on delivery."""
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_namespace=f"herald-test-{uuid.uuid4().hex[:12]}",
    )
    with running_stack(settings, sender=False) as stack:
        yield stack


def _check(answer: httpx.Response, code: int) -> None:
    check_error(answer.status_code, dict(answer.headers), answer.json(), code)


@pytest.mark.parametrize(("raw", "headers", "code"), BAD_INPUT)
def test_bad_input_gets_its_4xx_with_a_json_error(
    stack: Stack, raw: bytes, headers: dict[str, str], code: int
) -> None:
    _check(stack.http.post(f"{stack.api}/messages", content=raw, headers=headers), code)


def test_a_chunked_body_over_the_limit_is_413(stack: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"destination": "d", "body": "'
        for _ in range(MAX_REQUEST_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    _check(stack.http.post(f"{stack.api}/messages", content=chunks(), headers=JSON), 413)


def test_a_chunked_body_within_the_limit_is_accepted(stack: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"destination": "d",'
        yield b' "body": "chunked"}'

    answer = stack.http.post(f"{stack.api}/messages", content=chunks(), headers=JSON)
    assert answer.status_code == 202


def test_accepted_answer_has_id_status_and_relative_location(stack: Stack) -> None:
    answer = stack.http.post(f"{stack.api}/messages", json={"destination": "d", "body": "b"})
    assert answer.status_code == 202
    message_id = answer.json()["id"]
    assert answer.json() == {"id": message_id, "status": "queued"}
    assert answer.headers["location"] == f"/message/{message_id}/status"
    status = stack.http.get(f"{stack.status}{answer.headers['location']}")
    assert status.json() == {"status": "queued"}


@pytest.mark.parametrize(
    "path", ["/message/-P77H0heo8YbSL83y6dCQL/status", "/message/nope/status", "/message/%00"]
)
def test_unknown_or_impossible_ids_are_404(stack: Stack, path: str) -> None:
    _check(stack.http.get(f"{stack.status}{path}"), 404)


@pytest.mark.parametrize("service", ["api", "status"])
def test_framework_404_and_405_are_json(stack: Stack, service: str) -> None:
    base = stack.api if service == "api" else stack.status
    _check(HTTP.get(f"{base}/no/such/route"), 404)
    _check(HTTP.delete(f"{base}/healthz"), 405)


def test_head_answers_like_get_without_a_body(stack: Stack) -> None:
    message_id = stack.http.post(
        f"{stack.api}/messages", json={"destination": "d", "body": "b"}
    ).json()["id"]
    for url in [
        f"{stack.status}/message/{message_id}/status",
        f"{stack.status}/message/{message_id}",
        f"{stack.status}/message/list?status=queued",
        f"{stack.status}/healthz",
        f"{stack.api}/readyz",
        f"{stack.api}/metrics",
    ]:
        head, get = stack.http.head(url), stack.http.get(url)
        assert (head.status_code, head.content) == (get.status_code, b""), url
        assert head.headers["content-type"] == get.headers["content-type"]
    missing = stack.http.head(f"{stack.status}/message/-P77H0heo8YbSL83y6dCQL/status")
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/json")


def test_status_service_has_no_write_routes(stack: Stack) -> None:
    _check(stack.http.post(f"{stack.status}/message/-P77H0heo8YbSL83y6dCQL/status"), 405)


@pytest.mark.parametrize("service", ["api", "status"])
def test_health_readiness_and_metrics(stack: Stack, service: str) -> None:
    base = stack.api if service == "api" else stack.status
    assert HTTP.get(f"{base}/healthz").json() == {"status": "ok"}
    assert HTTP.get(f"{base}/readyz").json() == {"status": "ready"}
    HTTP.get(f"{base}/healthz")
    metrics = HTTP.get(f"{base}/metrics").text
    assert (
        f'herald_http_requests_total{{code="200",method="GET",route="/healthz",service="{service}"}}'
        in metrics
    )


def _raw(stack: Stack, base: str, request: bytes) -> tuple[int, dict[str, str], object]:
    """Send bytes no HTTP client would (with the stack's key); the answer's code, headers and
    JSON body."""
    where = urlsplit(base)
    line, _, rest = request.partition(b"\r\n")
    auth = b"".join(f"{k}: {v}\r\n".encode() for k, v in stack.headers.items())
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(line + b"\r\n" + auth + rest if rest else request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


_POST_HEAD = b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /" + b"x" * 5_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * 9_000 + b"\r\n\r\n", 431),
        (_POST_HEAD + b"Content-Length: abc\r\n\r\n{}", 400),
    ],
)
@pytest.mark.parametrize("service", ["api", "status"])
def test_requests_the_server_refuses_get_json_errors_too(
    stack: Stack, service: str, request_bytes: bytes, code: int
) -> None:
    base = stack.api if service == "api" else stack.status
    status, headers, body = _raw(stack, base, request_bytes)
    check_error(status, headers, body, code)


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        # A malformed chunked body, found while the app reads it.
        (_POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
        # gunicorn refuses a control character in a header; in the key the contract says 422.
        (_POST_HEAD + b"Idempotency-Key: a\x01b\r\nContent-Length: 2\r\n\r\n{}", 422),
    ],
)
def test_broken_bodies_and_keys_get_their_json_errors(
    stack: Stack, request_bytes: bytes, code: int
) -> None:
    check_error(*_raw(stack, stack.api, request_bytes), code)


def test_an_error_answer_leaves_the_connection_usable(stack: Stack) -> None:
    with httpx.Client(timeout=10, headers=stack.headers) as client:
        big = b'{"destination": "d", "body": "' + b"x" * 70_000 + b'"}'
        refused = client.post(
            f"{stack.api}/messages", content=big, headers={"Content-Type": "text/plain"}
        )
        assert refused.status_code == 415
        again = client.post(f"{stack.api}/messages", json={"destination": "d", "body": "b"})
        assert again.status_code == 202
