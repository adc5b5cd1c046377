"""The retry policy: the last attempt, a first retry's delay, when a retry counts as lost."""

from __future__ import annotations

from herald.core.retries import RetryPolicy
from herald.core.settings import Settings


def _policy() -> RetryPolicy:
    return RetryPolicy.from_settings(
        Settings(max_retries=2, min_backoff_ms=100, max_backoff_ms=150)
    )


def test_the_attempt_after_max_retries_retries_is_the_last() -> None:
    policy = _policy()
    assert [policy.is_last(attempt) for attempt in (1, 2, 3)] == [False, False, True]


def test_a_first_retry_waits_the_providers_delay_when_it_named_one() -> None:
    assert _policy().first_retry_delay_ms(40) == 40


def test_a_first_retry_waits_between_the_minimum_and_the_maximum_backoff() -> None:
    delays = {_policy().first_retry_delay_ms(None) for _ in range(200)}
    assert min(delays) >= 75  # Dramatiq keeps jitter under the cap: 50-100 % of it
    assert max(delays) <= 150


def test_a_retry_is_lost_once_stuck_after_and_the_longest_backoff_have_passed() -> None:
    assert _policy().retry_lost_after_s(60) == 60.15


def test_dramatiqs_retries_enforces_the_same_numbers() -> None:
    retries = _policy().middleware()
    assert (retries.max_retries, retries.min_backoff, retries.max_backoff) == (2, 100, 150)
