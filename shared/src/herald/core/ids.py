"""Message ids: opaque, URL-safe, unguessable, and sorting as strings in creation order."""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

# Base-64 digits in ASCII order, so that string order is numeric order (and COLLATE "C" agrees).
ALPHABET = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
TIME_DIGITS = 8  # 48 bits of milliseconds since the epoch: good until the year 10889
RANDOM_DIGITS = 14  # 84 random bits: unguessable, and no collision within a millisecond
ID_LENGTH = TIME_DIGITS + RANDOM_DIGITS
ID_PATTERN = re.compile(rf"[{re.escape(ALPHABET)}]{{{ID_LENGTH}}}")


# Base 64 is done by the standard codec, then mapped digit for digit onto ALPHABET.
_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_ALPHABET = bytes.maketrans(_STANDARD, ALPHABET.encode())
_FROM_ALPHABET = bytes.maketrans(ALPHABET.encode(), _STANDARD)
# The id's 132 bits, shifted to a whole number of bytes that base 64 encodes without padding.
_PAD_BITS = 12
_ID_BYTES = (6 * ID_LENGTH + _PAD_BITS) // 8


def _encode(millis: int, random: int) -> str:
    value = (millis << 6 * RANDOM_DIGITS | random) << _PAD_BITS
    digits = base64.b64encode(value.to_bytes(_ID_BYTES, "big")).translate(_TO_ALPHABET)
    return digits[:ID_LENGTH].decode("ascii")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RANDOM_BITS = 6 * RANDOM_DIGITS
# Within one millisecond each id steps up from the previous one by a fresh random amount of this
# many bits: drawing order is kept, and no id can be guessed from its neighbour.
STEP_BITS = 64
_lock = threading.Lock()
_last = (0, 0)  # (millisecond, random part) of this process's latest id


def new_id(now_ms: int | None = None) -> str:
    """A fresh id whose first characters encode the current millisecond.

    Within one process ids also sort in the order they were drawn: in the same millisecond the
    next id's random part is the previous one plus 1 to 2**64 (a fresh random step), so every id
    carries at least 64 bits its neighbours do not reveal. A millisecond's first id starts in the
    lower half of the range, which leaves room for about a million steps.
    """
    global _last
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        last_ms, last_random = _last
        random = secrets.randbits(_RANDOM_BITS - 1)
        if millis == last_ms:
            stepped = last_random + 1 + secrets.randbits(STEP_BITS)
            # Past the range (a million ids in one millisecond): a fresh start, unordered.
            random = stepped if stepped < 1 << _RANDOM_BITS else random
        _last = (millis, random)
    return _encode(millis, random)


def drawn_at(message_id: str) -> datetime:
    """The millisecond an id was drawn at (its first TIME_DIGITS digits), in UTC."""
    # TIME_DIGITS digits are exactly 6 bytes: no padding to add or strip.
    raw = base64.b64decode(message_id[:TIME_DIGITS].encode("ascii").translate(_FROM_ALPHABET))
    return _EPOCH + timedelta(milliseconds=int.from_bytes(raw, "big"))


_MILLISECOND = timedelta(milliseconds=1)
_MAX_MILLIS = (1 << 6 * TIME_DIGITS) - 1


def first_id_at(when: datetime) -> str:
    """The smallest id drawable at `when`'s millisecond, for every aware datetime: a time bound.

    No id is drawn before 1970, so an earlier time gives the smallest id there is (every id
    sorts at or after it). The latest datetime (year 9999 at -23:59) still fits TIME_DIGITS
    (they last until 10889); the clamp at that end only keeps the encoding total.
    """
    # Exact integer milliseconds, floored (int(timestamp() * 1000) rounds through a float).
    millis = (when - _EPOCH) // _MILLISECOND
    return _encode(min(max(millis, 0), _MAX_MILLIS), 0)


def is_valid_id(candidate: str) -> bool:
    """Whether a string can be an id at all; anything else is answered 404 without a query."""
    return ID_PATTERN.fullmatch(candidate) is not None
