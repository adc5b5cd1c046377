"""Running Herald's real processes for tests: free ports, health waits, logs, clean stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from sqlalchemy import text

from dev.embedded import free_port
from herald.core import keys
from herald.core.db import make_engine
from herald.core.settings import Settings

BIN = Path(sys.executable).parent
# One pooled client for all test traffic: a client per request costs ~20 ms of TLS set-up.
HTTP = httpx.Client(timeout=10)
T = TypeVar("T")
_SENDS = re.compile(r'^herald_sends_total\{outcome="(\w+)"\} (\S+)$', re.MULTILINE)
# The tenant whose key a stack's client sends (HERALD_AUTH=keys).
STACK_TENANT = "e2e"


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll check until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Process:
    """One running deployable, its log kept in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the main process only (as Kubernetes does) and wait for the whole group."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"{self.name} ignored signal {sig} for {timeout} s") from None
        finally:
            self.kill_group()  # no orphaned worker may outlive its test

    def kill_group(self) -> None:
        """kill -9 of the process and every worker it forked."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def start(
    name: str, args: list[str], env: Mapping[str, str], log_dir: Path, health: str | None
) -> Process:
    """Start BIN/args[0]; if health is a URL, wait until it answers 200 (or fail with the log)."""
    process = launch(name, args, env, log_dir)
    if health is not None:
        wait_healthy(process, health)
    return process


def launch(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Process:
    """Start BIN/args[0] in its own process group, its output in log_dir/name.log."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test can kill all of it
        )
    return Process(name, popen, log)


def wait_healthy(process: Process, url: str) -> None:
    """Wait until url answers 200; on failure kill the process and fail with its log."""
    try:
        wait_for(lambda: _healthy(process, url), 60, f"{process.name} at {url}", 0.05)
    except AssertionError:
        process.kill_group()
        raise AssertionError(f"{process.name} did not come up:\n{process.output()}") from None


def _healthy(process: Process, url: str) -> bool:
    if process.popen.poll() is not None:
        raise AssertionError(f"{process.name} exited early:\n{process.output()}")
    return HTTP.get(url, timeout=1).status_code == 200


@dataclass
class Stack:
    """The whole system on free ports: api, status, sender and the stand-in provider."""

    settings: Settings
    log_dir: Path
    processes: dict[str, Process] = field(default_factory=dict)
    # `Authorization: Bearer <a key of STACK_TENANT>`; none with HERALD_AUTH=none.
    headers: dict[str, str] = field(default_factory=dict)
    # A client that sends them: for the api and status services (HTTP for anything else).
    http: httpx.Client = HTTP

    @property
    def api(self) -> str:
        return self.processes["api"].url

    @property
    def status(self) -> str:
        return self.processes["status"].url

    @property
    def provider(self) -> str:
        return self.settings.provider_url

    def start_sender(self, processes: int = 1, threads: int = 4) -> Process:
        metrics = self.settings.sender_metrics_port
        sender = start(
            "sender",
            ["herald-sender", "--processes", str(processes), "--threads", str(threads)],
            self.settings.child_environment(),
            self.log_dir,
            f"http://127.0.0.1:{metrics}/healthz",
        )
        self.processes["sender"] = sender
        return sender

    def post(self, body: str = "hello", destination: str = "+15550100", **fields: object) -> str:
        """POST one message with the stack's key; its id (anything but a 202 fails the test)."""
        message = {"destination": destination, "body": body, **fields}
        answer = self.http.post(f"{self.api}/messages", json=message)
        assert answer.status_code == 202, answer.text
        message_id: str = answer.json()["id"]
        return message_id

    def status_of(self, message_id: str) -> str:
        answer = self.http.get(f"{self.status}/message/{message_id}/status")
        status: str = answer.json()["status"]
        return status

    def wait_status(self, message_id: str, wanted: str, timeout: float = 20) -> None:
        wait_for(lambda: self.status_of(message_id) == wanted, timeout, f"{message_id} {wanted}")

    def stop_all(self) -> None:
        """SIGTERM every process at once, then wait for each: shutdowns overlap."""
        for process in self.processes.values():
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in self.processes.values())


def sender_outcomes(stack: Stack) -> dict[str, int]:
    """The running sender's sends by outcome (sent, skipped, retry, failed), from /metrics.

    skipped counts ids that claim() turned away: duplicates and canceled messages. A count is
    the event that shows the sender handled a queue message, whether it sent or not.
    """
    url = f"http://127.0.0.1:{stack.settings.sender_metrics_port}/metrics"
    found = _SENDS.findall(HTTP.get(url).text)
    return {outcome: round(float(value)) for outcome, value in found}


def _http(stack: Stack, name: str, script: str, port: int) -> Process:
    bind = f"127.0.0.1:{port}"
    process = launch(
        name, [script, "--bind", bind], stack.settings.child_environment(), stack.log_dir
    )
    process.url = f"http://{bind}"
    stack.processes[name] = process
    return process


def _fresh_key(settings: Settings) -> dict[str, str]:
    """Empty the database (an earlier test's rows would otherwise be found by this stack's
    sweeper and delivered to its provider) and, with HERALD_AUTH=keys, make a key for
    STACK_TENANT: the headers that send it."""
    engine = make_engine(settings, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE messages, idempotency_keys, api_keys, tenants"))
        key = None if settings.auth == "none" else keys.create(conn, STACK_TENANT, "tests", None)
    engine.dispose()
    return {} if key is None else {"Authorization": f"Bearer {key[1]}"}


@contextmanager
def running_stack(settings: Settings, sender: bool = True, threads: int = 4) -> Iterator[Stack]:
    """Start every deployable against settings' database and Redis; stop them all afterwards.

    The database starts empty, then holds a key of STACK_TENANT that stack.http sends.
    """
    headers = _fresh_key(settings)
    provider_port = free_port()
    settings = settings.model_copy(
        update={
            "provider_url": f"http://127.0.0.1:{provider_port}",
            "sender_metrics_port": free_port(),
        }
    )
    with ExitStack() as cleanup:
        log_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="herald-e2e-")))
        http = cleanup.enter_context(httpx.Client(timeout=10, headers=headers))
        stack = Stack(settings, log_dir, headers=headers, http=http)
        cleanup.callback(stack.stop_all)
        # Start all at once, then wait for each: boots overlap.
        started = [
            _http(stack, "messageapp", "herald-messageapp", provider_port),
            _http(stack, "api", "herald-api", free_port()),
            _http(stack, "status", "herald-status", free_port()),
        ]
        for process in started:
            wait_healthy(process, f"{process.url}/healthz")
        if sender:
            stack.start_sender(threads=threads)
        yield stack
