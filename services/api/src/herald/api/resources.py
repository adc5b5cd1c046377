"""The ingest API's HTTP resources: parse, call one function from ingest, shape the answer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import falcon

from herald.api.ingest import Ingest, KeyReused
from herald.api.payloads import read_body
from herald.api.ratelimit import RateLimits, admit
from herald.core.auth import principal_of
from herald.core.idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    INVALID_KEY_DESCRIPTION,
    is_valid_key,
)
from herald.core.ids import is_valid_id
from herald.core.schemas import (
    MAX_BATCH_REQUEST_BYTES,
    MAX_REQUEST_BYTES,
    Accepted,
    NewBatch,
    NewMessage,
)
from herald.core.statuses import Status
from herald.core.web import unknown_message


def status_path(message_id: str) -> str:
    """Where a client polls a message: the Location of every 202."""
    return f"/message/{message_id}/status"


def _answer(accepted: Accepted) -> dict[str, str]:
    """The JSON of every accepting answer: {"id", "status"} (built directly: no model_dump)."""
    return {"id": accepted.id, "status": accepted.status.value}


def _move(message_id: str, action: str, move: Callable[[str], tuple[bool, Status | None]]) -> None:
    """move(message_id); if it did not move, the 404 (unknown id) or 409 (status) saying why."""
    if not is_valid_id(message_id):
        raise unknown_message(message_id)  # an id that cannot exist costs no query
    moved, status = move(message_id)
    if status is None:
        raise unknown_message(message_id)
    if not moved:
        raise falcon.HTTPConflict(
            title=f"Cannot {action}", description=f"message {message_id} is {status.value}"
        )


class Messages:
    """POST /messages: accept one message."""

    def __init__(self, ingest: Ingest, limits: RateLimits) -> None:
        self._ingest = ingest
        self._limits = limits

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = req.get_header(IDEMPOTENCY_KEY_HEADER)
        if key is not None and not is_valid_key(key):
            raise falcon.HTTPUnprocessableEntity(
                title="Invalid Idempotency-Key", description=INVALID_KEY_DESCRIPTION
            )
        new = read_body(req, NewMessage, MAX_REQUEST_BYTES)
        principal = principal_of(req)
        # Only a valid message takes from the bucket: the limit is on accepted messages.
        admit(self._limits, principal, 1, resp)
        try:
            accepted = self._ingest.accept(principal.tenant, new, key)
        except KeyReused:
            raise falcon.HTTPUnprocessableEntity(
                title="Idempotency-Key reused",
                description="this key was used with a different payload in the last 24 h",
            ) from None
        resp.status = falcon.HTTP_202
        resp.location = status_path(accepted.id)
        resp.media = _answer(accepted)


class MessagesBatch:
    """POST /messages/batch: accept up to 1,000 messages, all or none."""

    def __init__(self, ingest: Ingest, limits: RateLimits) -> None:
        self._ingest = ingest
        self._limits = limits

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        batch = read_body(req, NewBatch, MAX_BATCH_REQUEST_BYTES)
        principal = principal_of(req)
        req.context.messages = len(batch.messages)  # what the ingest counters count
        admit(self._limits, principal, len(batch.messages), resp)
        accepted = self._ingest.accept_batch(principal.tenant, batch)
        resp.status = falcon.HTTP_202
        resp.media = {"messages": [_answer(item) for item in accepted]}


class Cancel:
    """POST /messages/{id}/cancel: scheduled or queued -> canceled."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    def on_post(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        _move(message_id, "cancel", partial(self._ingest.cancel, principal_of(req).tenant))
        resp.media = _answer(Accepted(id=message_id, status=Status.CANCELED))


class Retry:
    """POST /messages/{id}/retry: failed -> queued, and enqueued again."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    def on_post(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        _move(message_id, "retry", partial(self._ingest.retry, principal_of(req).tenant))
        resp.status = falcon.HTTP_202
        resp.location = status_path(message_id)
        resp.media = _answer(Accepted(id=message_id, status=Status.QUEUED))
