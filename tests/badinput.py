"""The contract's bad-input table, shared by the in-process and the over-HTTP tests."""

from __future__ import annotations

from herald.core.schemas import MAX_REQUEST_BYTES

JSON = {"Content-Type": "application/json"}

# (raw body, headers, expected status)
BAD_INPUT: list[tuple[bytes, dict[str, str], int]] = [
    (b'{"destination": "d", "body": "b"}', {}, 415),
    (b'{"destination": "d", "body": "b"}', {"Content-Type": "text/plain"}, 415),
    (b'{"destination": "d", "body": "b"', JSON, 400),
    (b"", JSON, 400),
    (b'{"destination": "d", "body": "\xff"}', JSON, 400),
    (b"[" * 30_000 + b"]" * 30_000, JSON, 400),
    (b'{"destination": "d", "body": "' + b"x" * MAX_REQUEST_BYTES + b'"}', JSON, 413),
    (b'{"destination": "d", "body": "b\\u0000"}', JSON, 422),
    (b'{"destination": "d", "body": "\\ud800"}', JSON, 422),
    (b'{"destination": "d", "body": "b", "priority": 1}', JSON, 422),
    (b'{"destination": "d"}', JSON, 422),
    (b'{"destination": 1, "body": "b"}', JSON, 422),
    (b'{"destination": "d", "body": 99999999999999999999999}', JSON, 422),
    (b'{"destination": "   ", "body": "b"}', JSON, 422),
    (b'{"destination": "d", "body": "' + b"b" * 10_001 + b'"}', JSON, 422),
    (b'{"destination": "' + b"d" * 256 + b'", "body": "b"}', JSON, 422),
    (b'["d", "b"]', JSON, 422),
    (b'"text"', JSON, 422),
    (b"null", JSON, 422),
    (b'{"destination": "d", "body": "b", "send_at": "2030-01-01T00:00:00"}', JSON, 422),
    (b'{"destination": "d", "body": "b", "send_at": "next week"}', JSON, 422),
    (b'{"destination": "d", "body": "b", "send_at": 1893456000}', JSON, 422),
]


def check_error(status: int, headers: dict[str, str], body: object, expected: int) -> None:
    """An error answer: the expected code, JSON, exactly a title and a description."""
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    assert isinstance(body, dict)
    assert set(body) == {"title", "description"}
    assert body["title"]
    assert body["description"]
