"""The message lifecycle: every status, and which statuses each transition may leave."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    CANCELED = "canceled"


# Allowed source statuses of each transition; the UPDATE's WHERE clause is built from these.
CLAIMABLE = (Status.QUEUED, Status.RETRYING)
IN_FLIGHT = (Status.SENDING,)
CANCELABLE = (Status.SCHEDULED, Status.QUEUED)
RETRYABLE = (Status.FAILED,)
DUE = (Status.SCHEDULED,)
TERMINAL = (Status.SENT, Status.FAILED, Status.CANCELED)
# Statuses a sweeper looks at: a message in one of them is owed a delivery attempt.
PENDING = (Status.QUEUED, Status.RETRYING, Status.SENDING)


def sql_list(statuses: tuple[Status, ...]) -> str:
    """Statuses as an SQL list literal, for partial indexes and set-based statements."""
    return ", ".join(f"'{status.value}'" for status in statuses)
