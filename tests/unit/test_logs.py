import io
import json
import logging

import falcon
import falcon.testing

from herald.core.logs import REQUEST_ID_HEADER, RequestIds, _Context, json_formatter


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter("api"))
    handler.addFilter(_Context())
    logger = logging.getLogger("herald.test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_log_line_is_one_json_object_with_service_and_message_id() -> None:
    logger, stream = _capture()
    logger.warning("failed: %s", "HTTP 400", extra={"message_id": "-P77ME4JtfnKJP23Mlz6f0"})
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["message"] == "failed: HTTP 400"
    assert event["level"] == "WARNING"
    assert event["service"] == "api"
    assert event["message_id"] == "-P77ME4JtfnKJP23Mlz6f0"
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
