"""What became of the messages posted to ingest, per tenant: accepted, or refused and why.

The tenant label takes one value per tenant (a tenant's name is what its keys say, never a key,
a key id or a secret) plus UNKNOWN_TENANT for requests whose key was refused, so its number of
series is bounded by the number of tenants times the few outcomes.
"""

from __future__ import annotations

import functools
from typing import Any

import falcon
from prometheus_client import Counter

# The posts that hand Herald messages; reads, cancel and retry are not counted here.
INGEST_PATHS = frozenset({"/messages", "/messages/batch"})
# No tenant is known before a key is accepted; no tenant name can be "-" (TENANT_PATTERN).
UNKNOWN_TENANT = "-"

ACCEPTED, AUTH, RATE, OVERLOAD, VALIDATION, ERROR = (
    "accepted", "auth", "rate", "overload", "validation", "error",
)  # fmt: skip


def outcome_of(status: int) -> str:
    """The outcome an ingest answer's status code stands for.

    Every 503 is `overload`: shed under load, or PostgreSQL unreachable; either way the service
    could not take the messages now, and a retry later may succeed.
    """
    if status < 300:
        return ACCEPTED
    if status == 401:
        return AUTH
    if status == 429:
        return RATE
    if status == 503:
        return OVERLOAD
    return VALIDATION if status < 500 else ERROR


class IngestOutcomes:
    """Falcon middleware counting the messages of every ingest POST by tenant and outcome.

    A batch counts its items once they are known (req.context.messages, set by the resource
    after parsing); a request refused before that counts as one.
    """

    def __init__(self) -> None:
        self._messages = Counter(
            "herald_ingest_messages_total",
            "Messages posted to ingest, by tenant and outcome (accepted, or the reason refused).",
            ["tenant", "outcome"],
            registry=None,  # multiprocess: samples live in files, the scrape collects them
        )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        if req.method != "POST" or req.path not in INGEST_PATHS:
            return
        principal = getattr(req.context, "principal", None)
        tenant = UNKNOWN_TENANT if principal is None else principal.tenant
        count = getattr(req.context, "messages", 1)
        self._counter(tenant, outcome_of(resp.status_code)).inc(count)

    # labels() checks its values and takes a lock on every call: the children are kept.
    @functools.cache  # noqa: B019  # one middleware per process; bounded by tenants x outcomes
    def _counter(self, tenant: str, outcome: str) -> Any:
        return self._messages.labels(tenant, outcome)
