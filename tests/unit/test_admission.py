"""The admission rule on a stand-in WSGI app: counting, refusing, releasing."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from herald.core.admission import Admission

Environ = dict[str, Any]


class Gate:
    """A WSGI app whose requests wait until opened; or raise, when told to."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls = 0

    def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
        self.calls += 1
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        self.entered.release()
        self.open.wait()
        start_response("200 OK", [])
        return [b"ok"]


def _call(app: Admission, path: str) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "POST"}, start_response))
    return answer["status"], answer["headers"], body


def test_the_request_past_the_limit_is_503_without_running_the_app() -> None:
    gate = Gate()
    refusals: list[None] = []
    app = Admission(gate, limit=1, refused=lambda: refusals.append(None))
    worker = threading.Thread(target=_call, args=(app, "/messages"))
    worker.start()
    gate.entered.acquire()
    status, headers, body = _call(app, "/messages")
    gate.open.set()
    worker.join()
    assert status.startswith("503")
    assert headers["Retry-After"] == "1"
    assert headers["Content-Length"] == str(len(body))
    assert b'"title"' in body
    assert b'"description"' in body
    assert (gate.calls, app.shed, app.in_flight, len(refusals)) == (1, 1, 0, 1)


def test_a_request_that_raises_frees_its_place() -> None:
    app = Admission(Gate(), limit=1)
    with pytest.raises(RuntimeError):
        _call(app, "/boom")
    assert app.in_flight == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_scrapes_pass_even_at_a_limit_of_zero_free_places(path: str) -> None:
    gate = Gate()
    gate.open.set()
    app = Admission(gate, limit=1)
    assert app._places.acquire(blocking=False)  # the one place is taken
    assert _call(app, path)[0] == "200 OK"
    assert app.shed == 0


def test_a_request_waiting_for_a_place_is_admitted_when_one_frees() -> None:
    gate = Gate()
    app = Admission(gate, limit=1, wait=600.0)  # the wait ends by the gate, not by time
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_call, app, "/messages")
        gate.entered.acquire()
        second = pool.submit(_call, app, "/messages")
        gate.open.set()
        answers = [first.result()[0], second.result()[0]]
    assert answers == ["200 OK", "200 OK"]
    assert (gate.calls, app.shed, app.in_flight) == (2, 0, 0)
