"""The status service's HTTP resources."""

from __future__ import annotations

import falcon
from sqlalchemy import Engine

from herald.core.ids import is_valid_id
from herald.status.listing import ListQuery, list_messages
from herald.status.queries import Reader


def _not_found(message_id: str) -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Unknown message", description=f"no message {message_id!r}")


class MessageStatus:
    """GET /message/{id}/status: exactly {"status": ...}."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def on_get(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        # An id that cannot exist costs no query.
        status = self._reader.status_of(message_id) if is_valid_id(message_id) else None
        if status is None:
            raise _not_found(message_id)
        resp.media = {"status": status.value}

    on_head = on_get  # HEAD: the same answer without its body


class MessageDetail:
    """GET /message/{id}: the full record."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def on_get(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        record = self._reader.record_of(message_id) if is_valid_id(message_id) else None
        if record is None:
            raise _not_found(message_id)
        resp.media = record.model_dump(mode="json")

    on_head = on_get  # HEAD: the same answer without its body


class MessageList:
    """GET /message/list: operators find messages (failed ones first of all) to act on."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = ListQuery.model_validate(req.params)
        resp.media = list_messages(self._engine, query).model_dump(mode="json")

    on_head = on_get  # HEAD: the same answer without its body
