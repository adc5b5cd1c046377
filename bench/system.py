"""Herald's deployables, the hello-world baseline and the recording provider, on free ports."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.processes import BIN, Child, launch, python_module, wait_healthy
from dev.embedded import free_port
from herald.core.settings import Settings
from herald.core.tenants import DEFAULT_TENANT

# The tenant whose key every load generator sends (HERALD_AUTH=keys).
BENCH_TENANT = "bench"

_WORKER_CLASS = re.compile(r"Using worker: (\w+)")
_LEVEL = re.compile(r'"level": "(WARNING|ERROR|CRITICAL)"')


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def log_events(path: Path, start: int = 0) -> dict[str, int]:
    """Warnings, errors and delivery retries Herald logged in path from byte `start` on."""
    counts: dict[str, int] = {}
    if not path.exists():
        return counts
    with path.open("rb") as log:
        log.seek(start)
        for raw in log:
            line = raw.decode(errors="replace")
            found = _LEVEL.search(line)
            if found:
                counts[found.group(1)] = counts.get(found.group(1), 0) + 1
            if '"message": "retrying' in line:
                counts["retrying"] = counts.get("retrying", 0) + 1
    return counts


@dataclass(frozen=True)
class ServerConfig:
    """What the API and its hello-world twin are both given; serve() derives the rest."""

    workers: int
    connections: int

    def argv(self) -> list[str]:
        return ["--workers", str(self.workers), "--connections", str(self.connections)]


@dataclass
class System:
    """The running processes of a benchmark, by name."""

    settings: Settings
    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)
    # One kept-alive client for the harness's own calls: a new httpx client per call builds an
    # SSL context (milliseconds of CPU), taken from the measured system while it is polled.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    # `Authorization: Bearer <key>` (make_key), sent by every client of the api and status, and
    # to the hello-world baselines too: they get the very same bytes.
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def tenant(self) -> str:
        """The tenant the benchmark's requests are served as."""
        return DEFAULT_TENANT if self.settings.auth == "none" else BENCH_TENANT

    @property
    def headers_file(self) -> Path:
        """headers as JSON, for the open-loop generator's process (no key on a command line)."""
        return self.log_dir / "headers.json"

    def make_key(self) -> None:
        """Make a key of BENCH_TENANT with herald-keys, as an operator would; send it from now on.
        With HERALD_AUTH=none there is nothing to send."""
        if self.settings.auth == "none":
            return
        argv = [str(BIN / "herald-keys"), "create", "--tenant", BENCH_TENANT, "--label", "bench"]
        env = self.settings.child_environment()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        self.headers = {"Authorization": f"Bearer {done.stdout.splitlines()[-1]}"}
        descriptor = os.open(self.headers_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(self.headers, file)

    @property
    def api_config(self) -> ServerConfig:
        return ServerConfig(self.settings.api_workers, self.settings.api_connections)

    @property
    def status_config(self) -> ServerConfig:
        return ServerConfig(self.settings.status_workers, self.settings.status_connections)

    def url(self, name: str) -> str:
        return self.children[name].url

    def pid(self, name: str) -> int:
        return self.children[name].pid

    def _http(self, name: str, argv: list[str], settings: Settings | None = None) -> Child:
        port = free_port()
        bind = f"127.0.0.1:{port}"
        env = (settings or self.settings).child_environment()
        child = launch(name, [*argv, "--bind", bind], env, self.log_dir)
        child.url = f"http://{bind}"
        self.children[name] = child
        return child

    def start(self, *names: str) -> None:
        """Start the named processes at once, then wait for each: boots overlap."""
        starters = {
            "hello": lambda: self._http(
                "hello", [*python_module("bench.hello"), *self.api_config.argv()]
            ),
            "hello-status": lambda: self._http(
                "hello-status", [*python_module("bench.hello"), *self.status_config.argv()]
            ),
            "api": lambda: self._http("api", ["herald-api", *self.api_config.argv()]),
            "status": lambda: self._http("status", ["herald-status", *self.status_config.argv()]),
            "messageapp": lambda: self._http("messageapp", ["herald-messageapp"]),
            "recorder": lambda: self._http("recorder", python_module("bench.recorder")),
        }
        started = [starters[name]() for name in names]
        for child in started:
            wait_healthy(child, f"{child.url}/healthz")

    def start_sender(self, provider_url: str) -> Child:
        """herald-sender with its default flags (the tuning its --help shows), on provider_url."""
        settings = self.settings.model_copy(
            update={"provider_url": provider_url, "sender_metrics_port": free_port()}
        )
        child = launch("sender", ["herald-sender"], settings.child_environment(), self.log_dir)
        child.url = f"http://127.0.0.1:{settings.sender_metrics_port}"
        self.children["sender"] = child
        return child

    def wait_sender(self) -> None:
        wait_healthy(self.children["sender"], f"{self.url('sender')}/healthz")

    def stop(self, *names: str) -> None:
        for name in names:
            child = self.children.pop(name, None)
            if child is not None:
                child.stop()

    def stop_all(self) -> None:
        self.stop(*list(self.children))

    def worker_class(self, name: str) -> str:
        """The gunicorn worker class the named server logged at boot."""
        found = _WORKER_CLASS.search(self.children[name].log.read_text(errors="replace"))
        return found.group(1) if found else "?"

    def provider(self, method: str, path: str, json: object = None) -> httpx.Response:
        answer = self.http.request(method, f"{self.url('messageapp')}{path}", json=json)
        answer.raise_for_status()
        return answer
