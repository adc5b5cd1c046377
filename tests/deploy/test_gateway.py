"""The real nginx gateway, with deploy/gateway/nginx.conf, in front of the running services."""

from __future__ import annotations

from dev.embedded import free_port
from herald.core.settings import Settings
from tests.deploy.servers import gateway
from tests.stack import HTTP, running_stack, wait_for


def _hostport(url: str) -> str:
    return url.removeprefix("http://")


def _assert_json_error(answer_json: object) -> None:
    assert isinstance(answer_json, dict)
    assert set(answer_json) == {"title", "description"}


def test_the_gateway_routes_by_prefix_to_ingest_and_status(settings: Settings) -> None:
    # One stack for every assertion: starting one costs seconds.
    with (
        running_stack(settings) as stack,
        gateway(_hostport(stack.api), _hostport(stack.status)) as url,
    ):
        http = stack.http  # sends the stack's key: the gateway passes Authorization on
        answer = http.post(
            f"{url}/messages",
            json={"destination": "+15550100", "body": "via the gateway"},
            headers={"X-Request-ID": "gateway-test-1"},
        )
        assert answer.status_code == 202, answer.text
        assert answer.headers["X-Request-ID"] == "gateway-test-1"
        message_id = answer.json()["id"]
        location = answer.headers["Location"]
        assert location == f"/message/{message_id}/status"

        def sent() -> bool:
            return bool(http.get(f"{url}{location}").json() == {"status": "sent"})

        wait_for(sent, 20, f"{message_id} sent, read through the gateway")
        record = http.get(f"{url}/message/{message_id}")
        assert record.status_code == 200
        assert record.json()["body"] == "via the gateway"

        # /messages/... goes to the api: the batch is accepted, a sent message cannot be canceled.
        batch = http.post(
            f"{url}/messages/batch", json={"messages": [{"destination": "d", "body": "b"}]}
        )
        assert batch.status_code == 202, batch.text
        assert http.post(f"{url}/messages/{message_id}/cancel").status_code == 409

        # The status service's own JSON 404 for an id that cannot exist...
        missing = http.get(f"{url}/message/nope/status")
        assert missing.status_code == 404
        _assert_json_error(missing.json())
        # Without a key, each service's own 401 comes back through the gateway as it is.
        for refused in (
            HTTP.post(f"{url}/messages", json={"destination": "d", "body": "b"}),
            HTTP.get(f"{url}/message/{message_id}/status"),
        ):
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            _assert_json_error(refused.json())
        # ...and the gateway's own for paths outside both prefixes (metrics stay internal).
        for path in ("/", "/messagesx", "/healthz/x", "/metrics", "/readyz"):
            answer = HTTP.get(f"{url}{path}")
            assert answer.status_code == 404, path
            assert answer.headers["Content-Type"].startswith("application/json")
            _assert_json_error(answer.json())


def test_an_unreachable_service_is_a_json_503_with_retry_after() -> None:
    closed = f"127.0.0.1:{free_port()}"
    with gateway(closed, closed) as url:
        for answer in (
            HTTP.post(f"{url}/messages", json={"destination": "d", "body": "b"}),
            HTTP.get(f"{url}/message/x/status"),
        ):
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["Content-Type"].startswith("application/json")
            _assert_json_error(answer.json())
