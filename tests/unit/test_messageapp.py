"""The stand-in provider's HTTP contract and test-control routes, in process (no sockets)."""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import pytest
from falcon import testing

from herald.core.settings import Settings
from herald.messageapp.app import create_app
from herald.messageapp.cli import parse_bind

MESSAGE = {"destination": "+15550100", "body": "hello"}


def make_client(**settings: Any) -> testing.TestClient:
    return testing.TestClient(create_app(Settings(**settings), random.Random(7)))


@pytest.fixture
def client() -> testing.TestClient:
    return make_client()


def send(client: testing.TestClient, key: str | None = "k1", **payload: Any) -> testing.Result:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.simulate_post("/message", json=payload or MESSAGE, headers=headers)


def configure(client: testing.TestClient, **knobs: Any) -> dict[str, Any]:
    result = client.simulate_put("/config", json=knobs)
    assert result.status_code == 200, result.text
    config: dict[str, Any] = result.json
    return config


def assert_json_error(result: testing.Result, status: int) -> None:
    assert result.status_code == status
    assert result.headers["content-type"].startswith("application/json")
    assert set(result.json) == {"title", "description"}
    assert result.json["title"]
    assert result.json["description"]


def test_new_key_is_accepted_and_delivered_once(client: testing.TestClient) -> None:
    result = send(client, "k1")
    assert result.status_code == 200
    assert result.json == {"status": "accepted", "id": "k1", "duplicate": False}
    assert client.simulate_get("/messages").json == [{"id": "k1", **MESSAGE}]


def test_repeated_key_is_acknowledged_without_second_effect(client: testing.TestClient) -> None:
    send(client, "k1")
    result = send(client, "k1", destination="+15550199", body="other")
    assert result.status_code == 200
    assert result.json == {"status": "accepted", "id": "k1", "duplicate": True}
    assert client.simulate_get("/messages").json == [{"id": "k1", **MESSAGE}]


def test_stats_count_accepted_calls_unique_and_duplicate(client: testing.TestClient) -> None:
    assert client.simulate_get("/stats").json == {"received": 0, "unique": 0, "duplicates": 0}
    for key in ["a", "b", "a", "c", "a"]:
        send(client, key)
    assert client.simulate_get("/stats").json == {"received": 5, "unique": 3, "duplicates": 2}


def test_deliveries_are_listed_in_arrival_order(client: testing.TestClient) -> None:
    keys = [f"m{i}" for i in (3, 1, 2, 0)]
    for key in keys:
        send(client, key, destination="d", body=key)
    assert [m["id"] for m in client.simulate_get("/messages").json] == keys


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", {}),
        (b'{"destination": "d", "body": "\xff"}', {}),
        (b"", {}),
        (b'["d", "b"]', {}),
        (b'"text"', {}),
        (b'{"body": "b"}', {}),
        (b'{"destination": "d"}', {}),
        (b'{"destination": 5, "body": "b"}', {}),
        (b'{"destination": "d", "body": null}', {}),
        (b'{"destination": "", "body": "b"}', {}),
        (b'{"destination": "d", "body": "   "}', {}),
        (b'{"destination": "d", "body": "b"}', {"Idempotency-Key": None}),
        (b'{"destination": "d", "body": "b"}', {"Idempotency-Key": ""}),
    ],
)
def test_malformed_request_is_400_and_has_no_effect(
    client: testing.TestClient, body: bytes, headers: dict[str, str | None]
) -> None:
    merged = {"Content-Type": "application/json", "Idempotency-Key": "k1", **headers}
    sent = {name: value for name, value in merged.items() if value is not None}
    result = client.simulate_post("/message", body=body, headers=sent)
    assert_json_error(result, 400)
    assert client.simulate_get("/stats").json["received"] == 0


def test_oversized_body_is_413(client: testing.TestClient) -> None:
    result = send(client, "k1", destination="d", body="x" * (2 * 1024 * 1024))
    assert_json_error(result, 413)


def test_failure_rate_one_answers_503_and_records_nothing() -> None:
    client = make_client(messageapp_failure_rate=1.0)
    for _ in range(3):
        assert_json_error(send(client, "k1"), 503)
    assert client.simulate_get("/stats").json == {"received": 0, "unique": 0, "duplicates": 0}
    assert client.simulate_get("/messages").json == []


def test_failure_rate_between_zero_and_one_fails_some_calls() -> None:
    client = make_client(messageapp_failure_rate=0.5)
    codes = [send(client, f"k{i}").status_code for i in range(100)]
    assert set(codes) == {200, 503}
    assert client.simulate_get("/stats").json["unique"] == codes.count(200)


def test_failed_attempt_does_not_remember_the_key(client: testing.TestClient) -> None:
    configure(client, fail_next=1)
    assert_json_error(send(client, "k1"), 503)
    assert send(client, "k1").json["duplicate"] is False
    assert client.simulate_get("/stats").json == {"received": 1, "unique": 1, "duplicates": 0}


def test_fail_next_answers_429_with_retry_after_then_recovers(client: testing.TestClient) -> None:
    configure(client, fail_next=2, fail_status=429, retry_after="3")
    for _ in range(2):
        result = send(client, "k1")
        assert_json_error(result, 429)
        assert result.headers["retry-after"] == "3"
    result = send(client, "k1")
    assert result.status_code == 200
    assert "retry-after" not in result.headers
    assert client.simulate_get("/config").json["fail_next"] == 0


def test_fail_next_can_answer_a_permanent_error(client: testing.TestClient) -> None:
    configure(client, fail_next=1, fail_status=400)
    assert_json_error(send(client, "k1"), 400)
    assert client.simulate_get("/stats").json["unique"] == 0


def test_malformed_calls_do_not_use_up_fail_next(client: testing.TestClient) -> None:
    configure(client, fail_next=1)
    assert_json_error(send(client, None), 400)
    assert_json_error(send(client, "k1"), 503)


def test_latency_delays_the_answer() -> None:
    client = make_client(messageapp_latency_ms=50)
    started = time.monotonic()
    assert send(client, "k1").status_code == 200
    # A lower bound only: a busy machine may add time, never remove it.
    assert time.monotonic() - started >= 0.045


def test_config_patch_changes_only_the_given_knobs(client: testing.TestClient) -> None:
    assert client.simulate_get("/config").json == {
        "latency_ms": 0.0,
        "failure_rate": 0.0,
        "fail_status": 503,
        "fail_next": 0,
        "retry_after": None,
    }
    assert configure(client, latency_ms=5, retry_after="1")["failure_rate"] == 0.0
    config = configure(client, failure_rate=0.25, retry_after=None)
    assert (config["latency_ms"], config["failure_rate"], config["retry_after"]) == (5, 0.25, None)


@pytest.mark.parametrize(
    "knobs",
    [
        {"latency_ms": -1},
        {"latency_ms": "10"},
        {"latency_ms": True},
        {"failure_rate": 1.5},
        {"failure_rate": -0.1},
        {"fail_status": 200},
        {"fail_status": 600},
        {"fail_status": 503.0},
        {"fail_next": -1},
        {"fail_next": 1.5},
        {"retry_after": 1},
        {"retry_after": ""},
        {"retry_after": "1\r\nX-Evil: 1"},
        {"latency_ms": 10, "unknown": 1},
    ],
)
def test_invalid_config_is_400_and_changes_nothing(
    client: testing.TestClient, knobs: dict[str, Any]
) -> None:
    before = client.simulate_get("/config").json
    assert_json_error(client.simulate_put("/config", json=knobs), 400)
    assert client.simulate_get("/config").json == before


@pytest.mark.parametrize("body", [b"[]", b"{oops", b'"latency_ms"'])
def test_config_body_that_is_not_an_object_is_400(client: testing.TestClient, body: bytes) -> None:
    assert_json_error(client.simulate_put("/config", body=body), 400)


def test_deleting_messages_forgets_keys_and_counts(client: testing.TestClient) -> None:
    send(client, "k1")
    send(client, "k1")
    assert client.simulate_delete("/messages").status_code == 204
    assert client.simulate_get("/stats").json == {"received": 0, "unique": 0, "duplicates": 0}
    assert client.simulate_get("/messages").json == []
    assert send(client, "k1").json["duplicate"] is False


def test_reset_restores_the_startup_knobs_and_empties_the_ledger() -> None:
    client = make_client(messageapp_latency_ms=1)
    send(client, "k1")
    configure(client, latency_ms=0, fail_next=3, fail_status=429)
    assert client.simulate_post("/reset").status_code == 204
    config = client.simulate_get("/config").json
    assert (config["latency_ms"], config["fail_next"], config["fail_status"]) == (1, 0, 503)
    assert client.simulate_get("/messages").json == []


def test_health_is_ok(client: testing.TestClient) -> None:
    result = client.simulate_get("/healthz")
    assert (result.status_code, result.json) == (200, {"status": "ok"})
    result = client.simulate_get("/readyz")
    assert (result.status_code, result.json) == (200, {"status": "ready"})


def test_metrics_count_calls_by_outcome() -> None:
    client = make_client()
    send(client, "k1")
    send(client, "k1")
    configure(client, fail_next=1, fail_status=503)
    assert send(client, "k2").status_code == 503
    metrics = client.simulate_get("/metrics").text
    assert 'herald_messageapp_calls_total{outcome="accepted"} 1.0' in metrics
    assert 'herald_messageapp_calls_total{outcome="duplicate"} 1.0' in metrics
    assert 'herald_messageapp_calls_total{outcome="failed"} 1.0' in metrics


@pytest.mark.parametrize("accept", ["application/json", "text/html", "application/xml"])
def test_unknown_route_is_404_json(client: testing.TestClient, accept: str) -> None:
    assert_json_error(client.simulate_get("/nowhere", headers={"Accept": accept}), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/message"), ("PUT", "/message"), ("POST", "/stats"), ("POST", "/messages")],
)
def test_known_route_with_wrong_method_is_405_json(
    client: testing.TestClient, method: str, path: str
) -> None:
    result = client.simulate_request(method, path, headers={"Accept": "application/xml"})
    assert_json_error(result, 405)


def test_bind_is_parsed_as_host_and_port() -> None:
    assert parse_bind("127.0.0.1:3000") == ("127.0.0.1", 3000)
    assert parse_bind("[::1]:8080") == ("::1", 8080)


@pytest.mark.parametrize("value", ["3000", "host:", ":80", "host:port", "host:70000"])
def test_bad_bind_is_rejected(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bind(value)
