"""The request and response shapes of the public contract, and their documented limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from herald.core.statuses import Status

MAX_DESTINATION_CHARS = 255
MAX_BODY_CHARS = 10_000
MAX_REQUEST_BYTES = 64 * 1024
MAX_BATCH_REQUEST_BYTES = 16 * 1024 * 1024
MAX_BATCH_ITEMS = 1_000
MAX_IDEMPOTENCY_KEY_CHARS = 255


def _printable_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain lone surrogates") from None
    return value


def _rfc3339_text(value: Any) -> Any:
    # Only a string is an RFC 3339 time: pydantic would otherwise take numbers as epoch seconds.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string with an offset")
    return value


Text = Annotated[str, Field(strict=True), AfterValidator(_printable_text)]
SendAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


def _in_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


# Answers give every time in UTC, whatever the database session's time zone.
UtcTime = Annotated[datetime, AfterValidator(_in_utc)]


class NewMessage(BaseModel):
    """A message as a client submits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    destination: Annotated[Text, Field(min_length=1, max_length=MAX_DESTINATION_CHARS)]
    body: Annotated[Text, Field(min_length=1, max_length=MAX_BODY_CHARS)]
    send_at: SendAt | None = None


class NewBatch(BaseModel):
    """Up to MAX_BATCH_ITEMS messages, accepted all together or not at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: Annotated[list[NewMessage], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


class Accepted(BaseModel):
    """What ingest, cancel and retry answer: the id and the status it now has."""

    id: str
    status: Status


class MessageRecord(BaseModel):
    """The full stored record, as GET /message/{id} answers it."""

    id: str
    destination: str
    body: str
    status: Status
    attempts: int
    last_error: str | None
    created_at: UtcTime
    updated_at: UtcTime
    send_at: UtcTime | None
    sent_at: UtcTime | None
