import io
import json
import logging
import re
from typing import Any, Literal

import falcon
import falcon.testing
import pydantic
import pytest

from herald.core.auth import Authenticate
from herald.core.logs import (
    REQUEST_ID_HEADER,
    RequestIds,
    _Context,
    formatter,
    gunicorn_logconfig,
)
from herald.core.settings import Settings

MESSAGE_ID = "-P77ME4JtfnKJP23Mlz6f0"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _capture(log_format: str = "json") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, "api"))
    handler.addFilter(_Context())
    logger = logging.getLogger("herald.test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_log_line_is_one_json_object_with_service_and_message_id() -> None:
    logger, stream = _capture()
    logger.warning("failed: %s", "HTTP 400", extra={"message_id": MESSAGE_ID})
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["message"] == "failed: HTTP 400"
    assert event["level"] == "WARNING"
    assert event["service"] == "api"
    assert event["message_id"] == MESSAGE_ID
    assert event["time"].endswith("+00:00")


def test_logs_during_a_request_carry_its_request_id_and_the_answer_echoes_it() -> None:
    logger, stream = _capture()

    class Resource:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            logger.info("handled")
            resp.media = {}

    app = falcon.App(middleware=[RequestIds()])
    app.add_route("/", Resource())
    client = falcon.testing.TestClient(app)
    answer = client.simulate_get("/", headers={REQUEST_ID_HEADER: "req-42"})
    assert answer.headers[REQUEST_ID_HEADER] == "req-42"
    assert json.loads(stream.getvalue())["request_id"] == "req-42"
    generated = client.simulate_get("/").headers[REQUEST_ID_HEADER]
    assert len(generated) == 32


def _one_line(built: logging.Formatter) -> str:
    record = logging.makeLogRecord({"msg": "ready", "levelname": "INFO", "name": "gunicorn.error"})
    return built.format(record)


def test_json_is_the_default_format() -> None:
    line = _one_line(formatter(Settings().log_format, "api"))
    assert json.loads(line)["message"] == "ready"


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings(log_format="xml")


def test_a_console_line_is_readable_and_keeps_the_ids() -> None:
    logger, stream = _capture("console")
    extra = {"message_id": MESSAGE_ID, "request_id": "req-42", "attempt": 2}
    logger.warning("failed: %s", "HTTP 400", extra=extra)
    [line] = stream.getvalue().splitlines()
    plain = ANSI.sub("", line)
    assert re.fullmatch(
        rf"\d\d:\d\d:\d\d\.\d{{3}} WARNING api herald\.test\.logs failed: HTTP 400 "
        rf"request_id=req-42 message_id={MESSAGE_ID} attempt=2",
        plain,
    ), plain
    assert "\x1b[33mWARNING" in line  # the level is coloured
    assert f"\x1b[36mmessage_id={MESSAGE_ID}\x1b[0m" in line  # and so are the ids


def test_a_console_line_leaves_out_ids_it_does_not_have() -> None:
    logger, stream = _capture("console")
    logger.info("sweep done")
    assert ANSI.sub("", stream.getvalue()).rstrip().endswith("sweep done")


def test_a_console_line_shows_the_traceback_below_it() -> None:
    logger, stream = _capture("console")
    try:
        raise ValueError("provider surprise")
    except ValueError:
        logger.exception("provider call raised", extra={"message_id": MESSAGE_ID})
    first, *rest = stream.getvalue().splitlines()
    assert f"message_id={MESSAGE_ID}" in ANSI.sub("", first)
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: provider surprise"


def test_gunicorn_logs_in_the_format_settings_chose() -> None:
    lines = {}
    formats: tuple[Literal["json", "console"], ...] = ("json", "console")
    for log_format in formats:
        config = gunicorn_logconfig(Settings(log_format=log_format), "status")
        spec: dict[str, Any] = dict(config["formatters"]["herald"])
        lines[log_format] = _one_line(spec.pop("()")(**spec))  # as logging.config builds it
    assert json.loads(lines["json"])["service"] == "status"
    assert ANSI.sub("", lines["console"]).endswith("INFO    status gunicorn.error ready")


def test_logs_during_an_authenticated_request_carry_its_tenant_and_never_its_key() -> None:
    logger, stream = _capture()

    class Resource:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            logger.info("handled")
            resp.media = {}

    app = falcon.App(middleware=(RequestIds(), Authenticate(None)))  # HERALD_AUTH=none
    app.add_route("/", Resource())
    client = falcon.testing.TestClient(app)
    client.simulate_get("/", headers={"Authorization": "Bearer hk_0123456789abcdef_secret"})
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["tenant"] == "default"
    assert "secret" not in line
    logger.info("outside any request")
    assert json.loads(stream.getvalue().splitlines()[-1])["tenant"] is None
