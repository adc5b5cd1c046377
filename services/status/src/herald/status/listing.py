"""Listing messages for operators: filter by status and creation time, newest first, by cursor.

A tenant lists only its own. Ids are time-ordered, so a creation-time window is an id range
and the cursor is the last id of the page: every page is one range scan of the (tenant, status,
id) or the (tenant, id) index.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import Engine, select

from herald.core.connections import pooled_read
from herald.core.ids import ID_PATTERN, first_id_at
from herald.core.schemas import MessageRecord, Rfc3339Time
from herald.core.statuses import Status
from herald.core.tables import messages

MAX_PAGE = 500
_m = messages.c


def _split_commas(value: Any) -> Any:
    # ?status=failed,canceled and ?status=failed&status=canceled mean the same.
    values = value if isinstance(value, list) else [value]
    return [part for item in values for part in str(item).split(",") if part]


class ListQuery(BaseModel):
    """The query string of GET /message/list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Annotated[list[Status], BeforeValidator(_split_commas)] = []
    # Strictly RFC 3339, as send_at: pydantic alone would take epoch numbers, or no seconds.
    created_after: Rfc3339Time | None = None
    created_before: Rfc3339Time | None = None
    cursor: Annotated[str | None, Field(pattern=ID_PATTERN.pattern)] = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50


class Page(BaseModel):
    """One page of records and the cursor of the next (None on the last page)."""

    messages: list[MessageRecord]
    next_cursor: str | None


def list_messages(engine: Engine, tenant: str, query: ListQuery) -> Page:
    """The page of tenant's messages matching query, newest first."""
    statement = (
        select(messages).where(_m.tenant == tenant).order_by(_m.id.desc()).limit(query.limit)
    )
    if query.status:
        statement = statement.where(_m.status.in_(query.status))
    if query.created_after is not None:
        statement = statement.where(_m.id >= first_id_at(query.created_after))
    if query.created_before is not None:
        statement = statement.where(_m.id < first_id_at(query.created_before))
    if query.cursor is not None:
        statement = statement.where(_m.id < query.cursor)
    rows = pooled_read(engine, lambda conn: conn.execute(statement).mappings().all())
    records = [MessageRecord.model_validate(dict(row)) for row in rows]
    full = len(records) == query.limit
    return Page(messages=records, next_cursor=records[-1].id if full else None)
