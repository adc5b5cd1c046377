"""Per-process memory of API keys: checks without a database round trip per request.

A key's row, once read, is trusted for KEY_CACHE_SECONDS, counted from before the read, so a
revocation committed at time R is seen by every process's next check after R plus that: within
the contract's 5 s with room for a slow read. Reads of the ids missing at the same moment go as
one statement, one at a time per process (a Batcher), so even a flood of made-up keys costs
each process at most one query in flight; ids found absent are remembered too, for as long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from herald.core.batching import Batcher
from herald.core.db import BATCH_WAIT_SECONDS
from herald.core.keys import StoredKey

log = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 2.0
# Most ids one read carries, and most absent ids remembered (then forgotten all at once).
MAX_IDS_PER_READ = 500
MAX_UNKNOWN_IDS = 10_000
# A key's last use is written at most this often per process (the api's; the status
# service's role cannot write).
LAST_USED_EVERY_SECONDS = 60.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Entry:
    stored: StoredKey | None
    until: float


class KeyCache:
    """The rows of keys by id, each read at most KEY_CACHE_SECONDS ago."""

    def __init__(
        self,
        read: Callable[[list[str]], dict[str, StoredKey]],
        clock: Clock = time.monotonic,
        seconds: float = KEY_CACHE_SECONDS,
    ) -> None:
        self._read = read
        self._clock = clock
        self._seconds = seconds
        self._known: dict[str, _Entry] = {}
        self._unknown: dict[str, _Entry] = {}
        # A read has no effect: a request may give up on it (503) like any read by id.
        self._batcher: Batcher[str, StoredKey | None] = Batcher(
            self._fetch, MAX_IDS_PER_READ, "key-reads", BATCH_WAIT_SECONDS, effect_free=True
        )

    def stored(self, key_id: str) -> StoredKey | None:
        """The key's row (None: there is none), as the database had it moments ago."""
        now = self._clock()
        entry = self._known.get(key_id) or self._unknown.get(key_id)
        if entry is not None and entry.until > now:
            return entry.stored
        return self._batcher.submit(key_id)

    def _fetch(self, key_ids: list[str]) -> list[StoredKey | None]:
        # Valid from before the read: an entry never shows a state older than its lifetime.
        until = self._clock() + self._seconds
        wanted = sorted(set(key_ids))
        found = self._read(wanted)
        for key_id in wanted:
            stored = found.get(key_id)
            if stored is not None:
                self._known[key_id] = _Entry(stored, until)
                continue
            self._known.pop(key_id, None)  # deleted from the table
            if len(self._unknown) >= MAX_UNKNOWN_IDS:
                self._unknown.clear()  # a flood of made-up ids: memory stays bounded
            self._unknown[key_id] = _Entry(None, until)
        return [found.get(key_id) for key_id in key_ids]


class LastUsed:
    """Records when keys were used, off the requests' path: a background thread writes the ids
    due, each at most once per LAST_USED_EVERY_SECONDS in this process."""

    def __init__(
        self,
        write: Callable[[list[str]], None],
        clock: Clock = time.monotonic,
        every: float = LAST_USED_EVERY_SECONDS,
    ) -> None:
        self._write = write
        self._clock = clock
        self._every = every
        self._next: dict[str, float] = {}
        self._due: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def used(self, key_id: str) -> None:
        """Note a use of the key; costs a dict lookup unless its time is due again."""
        now = self._clock()
        if self._next.get(key_id, 0.0) > now:
            return
        with self._lock:
            self._next[key_id] = now + self._every
            self._due.add(key_id)
            if self._thread is None:
                # Started on first use, so it belongs to the process that serves (after a fork).
                self._thread = threading.Thread(target=self._run, name="key-uses", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                due, self._due = sorted(self._due), set()
            try:
                self._write(due)
            except Exception as error:  # a lost update of last-used times harms nothing
                log.warning(
                    "last-used times of %d keys not written: %s", len(due), type(error).__name__
                )
