"""What really happened, read from the two places that know: PostgreSQL and the provider.

PostgreSQL is Herald's source of truth for statuses; the stand-in provider's ledger is the
only witness of effects (one per Idempotency-Key) and of raw repeated calls.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import psycopg

from tests.stack import HTTP


def statuses(database_url: str, ids: list[str]) -> dict[str, str]:
    """The status of each of ids that has a row."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, status FROM messages WHERE id = ANY(%s)", (ids,))
        return {message_id: status for message_id, status in rows}


def status_counts(database_url: str) -> dict[str, int]:
    """How many rows are in each status, all rows included."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM messages GROUP BY status")
        return {status: count for status, count in rows}


def all_ids(database_url: str) -> list[str]:
    """Every message id stored, in acceptance order."""
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY id")]


def resent_count(database_url: str) -> int:
    """Rows whose provider call was started more than once (a retry, or a sweep after a crash)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM messages WHERE attempts > 1").fetchone()
        return 0 if row is None else int(row[0])


def wait_all_sent(database_url: str, ids: list[str], timeout: float) -> float:
    """Wait until every one of ids is `sent`; the seconds it took, or fail naming the rest."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        found = statuses(database_url, ids)
        unsent = {i: found.get(i, "(no row)") for i in ids if found.get(i) != "sent"}
        if not unsent:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            sample = dict(list(unsent.items())[:20])
            raise AssertionError(
                f"{len(unsent)} of {len(ids)} not sent after {timeout} s: "
                f"{dict(Counter(unsent.values()))}; for instance {sample}"
            )
        time.sleep(0.25)


def configure_provider(provider: str, **config: object) -> None:
    answer = HTTP.put(f"{provider}/config", json=config)
    assert answer.status_code == 200, answer.text


def provider_stats(provider: str) -> dict[str, int]:
    stats: dict[str, int] = HTTP.get(f"{provider}/stats").json()
    return stats


def delivered_ids(provider: str) -> list[str]:
    """The Idempotency-Key of every effect at the provider, in arrival order."""
    return [entry["id"] for entry in HTTP.get(f"{provider}/messages").json()]


@dataclass(frozen=True)
class Audit:
    """Accepted messages against the provider's effects and Herald's own statuses."""

    accepted: int
    sent: int  # accepted messages whose row says sent
    lost: int  # accepted messages not sent, or sent with no effect at the provider
    duplicate_effects: int  # effects beyond the first for one message
    foreign_effects: int  # effects whose key is no accepted message
    raw_repeats: int  # calls the provider answered again for a key it already had
    received: int  # every accepted call at the provider

    def figures(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "sent": self.sent,
            "lost": self.lost,
            "duplicate_effects": self.duplicate_effects,
            "raw_repeated_calls": self.raw_repeats,
        }


def audit(database_url: str, provider: str, ids: list[str]) -> Audit:
    """Compare what was accepted (ids) with what Herald recorded and the provider received."""
    recorded = statuses(database_url, ids)
    effects = Counter(delivered_ids(provider))
    stats = provider_stats(provider)
    sent = sum(1 for i in ids if recorded.get(i) == "sent")
    delivered_and_sent = sum(1 for i in ids if recorded.get(i) == "sent" and effects[i] >= 1)
    return Audit(
        accepted=len(ids),
        sent=sent,
        lost=len(ids) - delivered_and_sent,
        duplicate_effects=sum(count - 1 for count in effects.values())
        + (stats["unique"] - len(effects)),
        foreign_effects=len(set(effects) - set(ids)),
        raw_repeats=stats["duplicates"],
        received=stats["received"],
    )
