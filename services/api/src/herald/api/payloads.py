"""Reading a JSON request body into a schema: every kind of bad input becomes its own 4xx."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeVar

import falcon
import orjson
from pydantic import BaseModel

from herald.core.web import DRAIN_BYTES

Model = TypeVar("Model", bound=BaseModel)


def _too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(
        title="Request body too large", description=f"the limit is {limit} bytes"
    )


def _read_limited(req: falcon.Request, limit: int) -> bytes:
    if req.content_length is not None:
        if req.content_length > limit:
            # Read and dropped up to DRAIN_BYTES past the limit, so the client has finished
            # sending and can reuse the connection; anything larger is not worth it.
            if req.content_length <= limit + DRAIN_BYTES:
                req.bounded_stream.exhaust()
            raise _too_large(limit)
        return req.bounded_stream.read()
    # Chunked: no declared length, and Falcon's bounded stream would read nothing. gunicorn
    # decodes the chunks; read one byte past the limit to detect excess.
    raw = req.stream.read(limit + 1)
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _integer(digits: str) -> int | Decimal:
    # Python refuses int() of more than 4,300 digits; as a Decimal it is still a number (422).
    return int(digits) if len(digits) <= 4_000 else Decimal(digits)


def _parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise falcon.HTTPBadRequest(
            title="Invalid UTF-8", description="the request body is not valid UTF-8"
        ) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses some valid JSON (lone surrogate escapes, huge integers): those are schema
    # violations (422), not malformed JSON, so the standard parser gets the last word, made as
    # strict as the JSON grammar (no NaN or Infinity) and taking integers of any length.
    try:
        return json.loads(text, parse_constant=_not_json, parse_int=_integer)
    except (ValueError, RecursionError):
        raise falcon.HTTPBadRequest(
            title="Malformed JSON", description="the request body is not valid JSON"
        ) from None


def read_body(req: falcon.Request, model: type[Model], limit: int) -> Model:
    """The request's JSON body as `model`: 415, 413, 400 or 422 (ValidationError) otherwise."""
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != falcon.MEDIA_JSON:
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported media type", description="send the body as application/json"
        )
    return model.model_validate(_parse_json(_read_limited(req, limit)))
