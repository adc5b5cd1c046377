from itertools import pairwise

from herald.core.ids import (
    ALPHABET,
    ID_LENGTH,
    TIME_DIGITS,
    drawn_at,
    first_id_at,
    is_valid_id,
    new_id,
)


def test_alphabet_is_in_ascii_order_so_string_order_is_numeric_order() -> None:
    assert list(ALPHABET) == sorted(ALPHABET)
    assert len(set(ALPHABET)) == 64


def test_ids_are_url_safe_and_fixed_length() -> None:
    message_id = new_id()
    assert len(message_id) == ID_LENGTH
    assert set(message_id) <= set(ALPHABET)
    assert is_valid_id(message_id)


def test_later_millisecond_sorts_after_earlier() -> None:
    earlier = [new_id(now_ms=1_700_000_000_000 + i) for i in range(0, 5000, 7)]
    assert earlier == sorted(earlier)


def test_ids_in_the_same_millisecond_differ() -> None:
    ids = {new_id(now_ms=1_700_000_000_000) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_malformed_ids_are_not_valid() -> None:
    assert not is_valid_id("")
    assert not is_valid_id("a" * (ID_LENGTH - 1))
    assert not is_valid_id("a" * (ID_LENGTH + 1))
    assert not is_valid_id("!" * ID_LENGTH)
    assert not is_valid_id("../" + "a" * (ID_LENGTH - 3))


def test_ids_drawn_in_one_process_sort_in_drawing_order() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_first_id_at_bounds_the_ids_of_its_millisecond() -> None:
    from datetime import UTC, datetime

    when = datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    millis = int(when.timestamp() * 1000)
    assert new_id(now_ms=millis - 1) < first_id_at(when) <= new_id(now_ms=millis)
    assert new_id(now_ms=millis) < first_id_at(datetime.fromtimestamp((millis + 1) / 1000, UTC))


def test_ids_of_one_millisecond_are_not_guessable_from_their_neighbours() -> None:
    ids = [new_id(now_ms=1_700_000_000_000) for _ in range(1_000)]
    assert ids == sorted(ids)
    steps = [_random_part(b) - _random_part(a) for a, b in pairwise(ids)]
    # Steps are fresh 64-bit draws: a run of 1,000 has no repeats and no small ones.
    assert len(set(steps)) == len(steps)
    assert min(steps) > 1 << 40


def _random_part(message_id: str) -> int:
    value = 0
    for char in message_id[TIME_DIGITS:]:
        value = value * 64 + ALPHABET.index(char)
    return value


def test_drawn_at_is_the_millisecond_an_id_encodes() -> None:
    from datetime import UTC, datetime

    when = datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    assert drawn_at(new_id(now_ms=int(when.timestamp() * 1000))) == when


def test_times_before_1970_bound_ids_as_the_smallest_id() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    smallest = ALPHABET[0] * ID_LENGTH
    year_zero = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59)))
    for when in [datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), year_zero]:
        assert first_id_at(when) == smallest
    assert first_id_at(datetime(1970, 1, 1, tzinfo=UTC)) == smallest
    assert smallest <= new_id(now_ms=0)


def test_the_latest_time_there_is_bounds_every_id_drawn_up_to_year_9999() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    latest = datetime.max.replace(tzinfo=timezone(-timedelta(hours=23, minutes=59)))
    end_of_9999 = datetime.max.replace(tzinfo=UTC)
    millis = (end_of_9999 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert new_id(now_ms=millis) < first_id_at(latest)
    assert is_valid_id(first_id_at(latest))
