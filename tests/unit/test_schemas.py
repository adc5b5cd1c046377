from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from herald.core.schemas import MAX_BODY_CHARS, MAX_DESTINATION_CHARS, MessageRecord, NewMessage


def test_minimal_message_is_valid() -> None:
    new = NewMessage.model_validate({"destination": "+15551234", "body": "hello"})
    assert new.send_at is None


def test_limits_are_inclusive() -> None:
    longest = {"destination": "d" * MAX_DESTINATION_CHARS, "body": "b" * MAX_BODY_CHARS}
    new = NewMessage.model_validate(longest)
    assert (len(new.destination), len(new.body)) == (MAX_DESTINATION_CHARS, MAX_BODY_CHARS)


@pytest.mark.parametrize(
    "payload",
    [
        {"body": "x"},
        {"destination": "x"},
        {"destination": "", "body": "x"},
        {"destination": "   ", "body": "x"},
        {"destination": "x", "body": "\t\n"},
        {"destination": "d" * (MAX_DESTINATION_CHARS + 1), "body": "x"},
        {"destination": "x", "body": "b" * (MAX_BODY_CHARS + 1)},
        {"destination": 5, "body": "x"},
        {"destination": "x", "body": ["x"]},
        {"destination": "x", "body": "a\x00b"},
        {"destination": "x", "body": "a\ud800b"},
        {"destination": "x", "body": "y", "extra": 1},
        {"destination": "x", "body": "y", "send_at": "2030-01-01T00:00:00"},
        {"destination": "x", "body": "y", "send_at": "tomorrow"},
        {"destination": "x", "body": "y", "send_at": 1893456000},
    ],
)
def test_schema_violations_are_rejected(payload: object) -> None:
    with pytest.raises(ValidationError):
        NewMessage.model_validate(payload)


@pytest.mark.parametrize("payload", [[], "text", 3, None])
def test_top_level_must_be_an_object(payload: object) -> None:
    with pytest.raises(ValidationError):
        NewMessage.model_validate(payload)


def test_send_at_keeps_its_offset() -> None:
    new = NewMessage.model_validate(
        {"destination": "x", "body": "y", "send_at": "2030-01-01T09:00:00+02:00"}
    )
    assert new.send_at == datetime(2030, 1, 1, 7, tzinfo=UTC)


def test_record_times_are_answered_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    when = datetime(2030, 1, 1, 9, tzinfo=plus_two)
    record = MessageRecord(
        id="i", destination="d", body="b", status="sent", attempts=1, last_error=None,
        created_at=when, updated_at=when, send_at=None, sent_at=when,
    )  # fmt: skip
    dumped = record.model_dump(mode="json")
    assert dumped["created_at"] == "2030-01-01T07:00:00Z"
    assert dumped["sent_at"] == "2030-01-01T07:00:00Z"
