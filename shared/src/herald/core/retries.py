"""The retry policy: how many attempts a message gets, and how long each retry waits.

HERALD_MAX_RETRIES counts retries after the first attempt; each retry waits an exponential
backoff with jitter between HERALD_MIN_BACKOFF_MS and HERALD_MAX_BACKOFF_MS, or the provider's
Retry-After (capped at the maximum). Dramatiq's Retries middleware enforces it for single
sends; a batch's failed id starts its retries with the same delay; the row's attempts decide
the last one; the sweeper takes a retry for lost once no backoff could explain its wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq.middleware import Retries

from herald.core.adapters.dramatiq import retries_backoff_ms
from herald.core.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """HERALD_MAX_RETRIES, HERALD_MIN_BACKOFF_MS and HERALD_MAX_BACKOFF_MS, and what they imply."""

    max_retries: int
    min_backoff_ms: int
    max_backoff_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the settings describe."""
        return cls(settings.max_retries, settings.min_backoff_ms, settings.max_backoff_ms)

    def middleware(self) -> Retries:
        """Dramatiq's Retries middleware, enforcing this policy for single sends."""
        return Retries(
            max_retries=self.max_retries,
            min_backoff=self.min_backoff_ms,
            max_backoff=self.max_backoff_ms,
        )

    def is_last(self, attempt: int) -> bool:
        """Whether attempt (1 for the first of a budget) is the last one allowed."""
        return attempt > self.max_retries

    def first_retry_delay_ms(self, retry_after_ms: int | None) -> int:
        """How long the first retry waits: the provider's Retry-After, or what Retries picks."""
        if retry_after_ms is not None:
            return retry_after_ms
        return retries_backoff_ms(self.middleware(), 0)

    def retry_lost_after_s(self, stuck_after: float) -> float:
        """How long a retrying row may go untouched before its retry counts as lost.

        No retry waits longer than HERALD_MAX_BACKOFF_MS (a Retry-After is capped at it), so
        past that and stuck_after nothing will deliver it.
        """
        return stuck_after + self.max_backoff_ms / 1000
