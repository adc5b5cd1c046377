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
    (b'{"destination": "d", "body": "b", "send_at": "2030-01-01T00:00:00+0100"}', JSON, 422),
    (b'{"destination": "d", "body": "b", "send_at": "2030-01-01T00:00:00,5Z"}', JSON, 422),
    # Valid RFC 3339 whose UTC instant is before the year 1 or after 9999.
    (b'{"destination": "d", "body": "b", "send_at": "0001-01-01T00:00:00+01:00"}', JSON, 422),
    (b'{"destination": "d", "body": "b", "send_at": "9999-12-31T23:59:59-01:00"}', JSON, 422),
    (b'{"destination": "d", "body": NaN}', JSON, 400),
    (b'{"destination": "d", "body": "b", "send_at": Infinity}', JSON, 400),
    (b'{"destination": "d", "body": ' + b"1" * 5_000 + b"}", JSON, 422),
]

# Valid send_at values a strict parser might refuse; the instant each one means, in UTC.
GOOD_SEND_AT = [
    ("2030-01-01T00:00:00+16:00", "2029-12-31T08:00:00Z"),
    ("2030-01-01T00:00:00-23:59", "2030-01-01T23:59:00Z"),
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
    ("2030-01-01t09:00:00.123456789z", "2030-01-01T09:00:00.123456Z"),
]


def check_error(status: int, headers: dict[str, str], body: object, expected: int) -> None:
    """An error answer: the expected code, JSON, exactly a title and a description."""
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    assert isinstance(body, dict)
    assert set(body) == {"title", "description"}
    assert body["title"]
    assert body["description"]
