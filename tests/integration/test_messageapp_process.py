"""The real herald-messageapp process: it serves, overlaps slow calls, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from dev.embedded import free_port
from tests.stack import wait_for

CONCURRENT_CALLS = 100
LATENCY_MS = 2_000  # long, so that overlap shows whatever the load of the machine


def script() -> str:
    beside = Path(sys.executable).parent / "herald-messageapp"
    found = str(beside) if beside.exists() else shutil.which("herald-messageapp")
    assert found, "herald-messageapp is not installed: run uv sync"
    return found


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no /healthz within 60 s:\n{log.read_text()}")


@contextmanager
def running_provider(
    tmp_path: Path, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start herald-messageapp with these HERALD_* settings; yield its URL; stop it afterwards."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")}
    env.update({f"HERALD_{name.upper()}": value for name, value in settings.items()})
    bind = f"127.0.0.1:{free_port()}"
    log = tmp_path / "messageapp.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [script(), "--bind", bind], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(f"http://{bind}", process, log)
        yield f"http://{bind}", process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def post_concurrently(url: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def post(i: int) -> int:
            payload = {"destination": "+15550100", "body": f"m{i}"}
            headers = {"Idempotency-Key": f"key-{i}"}
            answer = await client.post(f"{url}/message", json=payload, headers=headers)
            return answer.status_code

        return list(await asyncio.gather(*(post(i) for i in range(count))))


def test_slow_calls_overlap_in_one_process(tmp_path: Path) -> None:
    with running_provider(tmp_path, messageapp_latency_ms=str(LATENCY_MS)) as (url, _):
        started = time.monotonic()
        codes = asyncio.run(post_concurrently(url, CONCURRENT_CALLS))
        elapsed = time.monotonic() - started
        assert codes == [200] * CONCURRENT_CALLS
        # One after another would take 200 s; overlapping, about 2 s. The bound leaves room
        # for a loaded machine and still tells the two apart.
        assert elapsed < 60, f"{CONCURRENT_CALLS} calls took {elapsed:.2f} s"
        stats = httpx.get(f"{url}/stats").json()
        assert stats == {"received": CONCURRENT_CALLS, "unique": CONCURRENT_CALLS, "duplicates": 0}


def test_settings_failure_rate_answers_503(tmp_path: Path) -> None:
    with running_provider(tmp_path, messageapp_failure_rate="1") as (url, _):
        payload = {"destination": "d", "body": "b"}
        answer = httpx.post(f"{url}/message", json=payload, headers={"Idempotency-Key": "k"})
        assert answer.status_code == 503
        assert set(answer.json()) == {"title", "description"}


def hang(url: str) -> None:
    """One call that the provider holds; whatever ends it (shutdown included) is fine here."""
    payload = {"destination": "d", "body": "b"}
    with suppress(httpx.HTTPError):
        httpx.post(f"{url}/message", json=payload, headers={"Idempotency-Key": "k"}, timeout=120)


def _arrived(url: str) -> bool:
    """Whether the one call planned to fail (fail_next 1) has arrived: its plan spent it."""
    return bool(httpx.get(f"{url}/config").json()["fail_next"] == 0)


def test_sigterm_stops_the_process_promptly_while_a_call_hangs(tmp_path: Path) -> None:
    with running_provider(tmp_path) as (url, process):
        # The hanging call is planned to fail: fail_next falls to 0 as it arrives.
        knobs = {"latency_ms": 60_000, "fail_next": 1}
        assert httpx.put(f"{url}/config", json=knobs).status_code == 200
        caller = threading.Thread(target=hang, args=(url,), daemon=True)
        caller.start()
        wait_for(lambda: _arrived(url), 60, "the call to be held by the provider")
        started = time.monotonic()
        process.terminate()
        # The deployables' bound is the provider timeout (5 s by default) + 5 s.
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
        caller.join(timeout=10)
