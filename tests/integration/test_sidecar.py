"""The sender's sidecar: /healthz and /readyz answer as every other deployable's do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from herald.core.health import Check
from herald.core.settings import Settings
from herald.sender.sidecar import dependency_checks, make_server


@contextmanager
def _serving(checks: dict[str, Check]) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, checks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_ready_when_postgresql_and_redis_answer(settings: Settings) -> None:
    with _serving(dependency_checks(settings)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}


def test_not_ready_names_what_is_unreachable(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with _serving(dependency_checks(down)) as url:
        answer = httpx.get(f"{url}/readyz")
        assert httpx.get(f"{url}/healthz").status_code == 200
    assert answer.status_code == 503
    assert answer.json() == {"title": "Not ready", "description": "unreachable: redis"}
