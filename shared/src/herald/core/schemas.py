"""The request and response shapes of the public contract, and their documented limits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
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


# RFC 3339's date-time (section 5.6): a "T" (or "t", or the space its note allows), seconds
# always, any number of fraction digits, and an offset that is "Z" or +hh:mm / -hh:mm.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_BAD_TIME = "must be an RFC 3339 time with an offset, e.g. 2030-01-01T09:00:00+01:00"


def parse_rfc3339(value: Any) -> datetime:
    """An RFC 3339 date-time string as a UTC datetime; ValueError for anything else.

    Only a string is a time (pydantic would take numbers as epoch seconds). A leap second
    (:60) is the instant after :59. Offsets up to +-23:59 are valid, and a time whose UTC
    instant falls outside years 1-9999 is refused here rather than by the database.
    """
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(_BAD_TIME)
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    micros = int((match[7] or "")[:6].ljust(6, "0"))
    sign, offset_hours, offset_minutes = match[8], int(match[9] or 0), int(match[10] or 0)
    if offset_hours > 23 or offset_minutes > 59 or second > 60:
        raise ValueError(_BAD_TIME)
    offset = timedelta(hours=offset_hours, minutes=offset_minutes)
    try:
        local = datetime(
            year, month, day, hour, minute, min(second, 59), micros,
            tzinfo=timezone(-offset if sign == "-" else offset),
        )  # fmt: skip
        return (local + timedelta(seconds=second - min(second, 59))).astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall between the years 1 and 9999 in UTC") from None
    except ValueError:
        raise ValueError(_BAD_TIME) from None


Text = Annotated[str, Field(strict=True), AfterValidator(_printable_text)]
# A time a client gives: send_at, and the list's window.
Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(parse_rfc3339)]


def _in_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


# Answers give every time in UTC, whatever the database session's time zone.
UtcTime = Annotated[datetime, AfterValidator(_in_utc)]


class NewMessage(BaseModel):
    """A message as a client submits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    destination: Annotated[Text, Field(min_length=1, max_length=MAX_DESTINATION_CHARS)]
    body: Annotated[Text, Field(min_length=1, max_length=MAX_BODY_CHARS)]
    send_at: Rfc3339Time | None = None


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
