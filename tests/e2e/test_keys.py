"""Keys over real HTTP, with herald-keys as an operator runs it: revocation on two api
processes, HERALD_AUTH=none, and no key ever in a log."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx

from dev.embedded import free_port
from herald.core.settings import Settings
from tests.servers import REDIS_URL
from tests.stack import BIN, Stack, launch, running_stack, wait_healthy

MESSAGE = {"destination": "+15550100", "body": "hello"}


def _herald_keys(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "herald-keys"), *args],
        env=stack.settings.child_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.rstrip("\n").splitlines()[-1]


def _second_api(stack: Stack) -> str:
    bind = f"127.0.0.1:{free_port()}"
    env = stack.settings.child_environment()
    process = launch("api-2", ["herald-api", "--bind", bind], env, stack.log_dir)
    process.url = f"http://{bind}"
    stack.processes["api-2"] = process  # stopped with the stack
    wait_healthy(process, f"{process.url}/healthz")
    return process.url


def _codes(api: str, key: str, count: int = 8) -> set[int]:
    """The answers of count posts, each on a new connection (so every worker gets some)."""
    headers = {"Authorization": f"Bearer {key}"}
    codes = set()
    for _ in range(count):
        with httpx.Client(timeout=10, headers=headers) as client:
            codes.add(client.post(f"{api}/messages", json=MESSAGE).status_code)
    return codes


def test_a_key_revoked_with_herald_keys_is_refused_by_two_api_processes_within_5_s(
    settings: Settings,
) -> None:
    with running_stack(settings, sender=False) as stack:
        apis = [stack.api, _second_api(stack)]
        key = _herald_keys(stack, "create", "--tenant", "acme", "--label", "e2e")
        for api in apis:  # every worker of both now holds the key in memory
            assert _codes(api, key) == {202}
        started = time.monotonic()
        _herald_keys(stack, "revoke", key)
        revoked = time.monotonic()  # committed by now
        pending = set(apis)
        while pending and time.monotonic() - revoked < 5:
            pending = {api for api in pending if _codes(api, key) != {401}}
        assert not pending, f"still accepted {time.monotonic() - revoked:.1f} s after revoke"
        for api in apis:  # and it stays refused everywhere
            assert _codes(api, key) == {401}
        print(f"refused by both within {time.monotonic() - started:.1f} s of running revoke")
        logs = stack.logs() + "".join(p.output() for p in stack.processes.values())
        assert key.split("_", 2)[2] not in logs


def test_herald_auth_none_serves_every_request_as_tenant_default(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_namespace=f"herald-test-{uuid.uuid4().hex[:12]}",
        auth="none",
    )
    with running_stack(settings, sender=False) as stack:
        assert stack.headers == {}
        answer = httpx.post(f"{stack.api}/messages", json=MESSAGE, timeout=10)
        assert answer.status_code == 202
        status = httpx.get(f"{stack.status}{answer.headers['location']}", timeout=10)
        assert status.json() == {"status": "queued"}
        listed = httpx.get(f"{stack.status}/message/list", timeout=10).json()["messages"]
        assert [m["id"] for m in listed] == [answer.json()["id"]]
