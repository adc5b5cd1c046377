"""The status service's HTTP resources."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import falcon
from sqlalchemy import Engine

from herald.core.auth import principal_of
from herald.core.ids import is_valid_id
from herald.core.web import unknown_message
from herald.status.listing import ListQuery, list_messages
from herald.status.queries import Reader

T = TypeVar("T")


def _found(message_id: str, read: Callable[[str], T | None]) -> T:
    """read(message_id), or the 404 of an unknown id; an id that cannot exist costs no query."""
    found = read(message_id) if is_valid_id(message_id) else None
    if found is None:
        raise unknown_message(message_id)
    return found


class MessageStatus:
    """GET /message/{id}/status: exactly {"status": ...}."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def on_get(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        resp.media = {
            "status": _found(
                message_id, partial(self._reader.status_of, principal_of(req).tenant)
            ).value
        }

    on_head = on_get  # HEAD: the same answer without its body


class MessageDetail:
    """GET /message/{id}: the full record."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def on_get(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        resp.media = _found(
            message_id, partial(self._reader.record_of, principal_of(req).tenant)
        ).model_dump(mode="json")

    on_head = on_get  # HEAD: the same answer without its body


class MessageList:
    """GET /message/list: operators find messages (failed ones first of all) to act on."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = ListQuery.model_validate(req.params)
        page = list_messages(self._engine, principal_of(req).tenant, query)
        resp.media = page.model_dump(mode="json")

    on_head = on_get  # HEAD: the same answer without its body
