"""The per-process memory of keys: how long it trusts a row, and what a flood costs."""

from __future__ import annotations

import threading
import time

from herald.core.keycache import MAX_UNKNOWN_IDS, KeyCache, LastUsed
from herald.core.keys import StoredKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Table:
    """The keys table as a dict, counting the reads made of it."""

    def __init__(self, rows: dict[str, StoredKey]) -> None:
        self.rows = rows
        self.reads: list[list[str]] = []

    def read(self, key_ids: list[str]) -> dict[str, StoredKey]:
        self.reads.append(key_ids)
        return {k: self.rows[k] for k in key_ids if k in self.rows}


def _key(key_id: str, revoked: bool = False) -> StoredKey:
    return StoredKey(key_id, "acme", None, b"h" * 32, revoked)


def test_a_row_is_trusted_for_2_s_then_read_again() -> None:
    clock, table = Clock(), Table({"a": _key("a")})
    cache = KeyCache(table.read, clock)
    assert cache.stored("a") == _key("a")
    clock.now += 1.9
    assert cache.stored("a") == _key("a")
    assert len(table.reads) == 1
    table.rows["a"] = _key("a", revoked=True)  # revoked meanwhile
    clock.now += 0.2
    stored = cache.stored("a")
    assert stored is not None
    assert stored.revoked
    assert len(table.reads) == 2


def test_a_row_is_trusted_from_before_its_read_started() -> None:
    clock, table = Clock(), Table({"a": _key("a")})

    def slow_read(key_ids: list[str]) -> dict[str, StoredKey]:
        clock.now += 1.5  # the read itself took 1.5 s: 0.5 s of trust is left after it
        return table.read(key_ids)

    cache = KeyCache(slow_read, clock)
    cache.stored("a")
    clock.now += 0.4
    cache.stored("a")
    assert len(table.reads) == 1
    clock.now += 0.2
    cache.stored("a")
    assert len(table.reads) == 2


def test_an_absent_id_is_remembered_and_a_flood_of_them_stays_bounded() -> None:
    clock, table = Clock(), Table({})
    cache = KeyCache(table.read, clock)
    for _ in range(10):
        assert cache.stored("nobody") is None
    assert len(table.reads) == 1
    for n in range(MAX_UNKNOWN_IDS + 5):
        cache.stored(f"made-up-{n}")
    assert len(cache._unknown) <= MAX_UNKNOWN_IDS


def test_concurrent_misses_share_reads() -> None:
    started, release = threading.Event(), threading.Event()
    table = Table({f"k{n}": _key(f"k{n}") for n in range(50)})

    def read(key_ids: list[str]) -> dict[str, StoredKey]:
        started.set()
        release.wait(5)
        return table.read(key_ids)

    cache = KeyCache(read)
    threads = [threading.Thread(target=cache.stored, args=(f"k{n}",)) for n in range(50)]
    threads[0].start()
    started.wait(5)  # the first read is under way; the other 49 ids arrive meanwhile
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(table.reads) == 2  # the first id alone, then the 49 others in one read
    assert sorted(id for ids in table.reads for id in ids) == sorted(f"k{n}" for n in range(50))


def test_last_use_is_written_in_the_background_at_most_once_a_minute_per_key() -> None:
    clock, written, wrote = Clock(), [], threading.Event()

    def write(key_ids: list[str]) -> None:
        written.append(key_ids)
        wrote.set()

    last_used = LastUsed(write, clock)
    for _ in range(100):
        last_used.used("a")
    assert wrote.wait(5)
    clock.now += 59
    last_used.used("a")
    time.sleep(0.1)
    assert written == [["a"]]
    wrote.clear()
    clock.now += 1
    last_used.used("a")
    last_used.used("b")
    assert wrote.wait(5)
    time.sleep(0.1)
    assert sorted(id for ids in written[1:] for id in ids) == ["a", "b"]
