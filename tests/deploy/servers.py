"""The project's real nginx gateway, Prometheus and PgBouncer, run from its own config files on
free ports.

Each config is the file under deploy/, changed only where a test must: the upstream and target
addresses become the local processes' ports. The servers are Debian's (`make system-deps`);
a missing one fails the test, it never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from dev.embedded import free_port
from tests.stack import HTTP, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GATEWAY_CONF = DEPLOY / "gateway" / "nginx.conf"
PROMETHEUS_CONF = DEPLOY / "prometheus" / "prometheus.yml"
PGBOUNCER_CONF = DEPLOY / "pgbouncer" / "pgbouncer.ini"
# Where compose and Kubernetes mount the pooler's files, as pgbouncer.ini names them.
PGBOUNCER_MOUNT = "/etc/pgbouncer/"


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} is not installed: run `make system-deps`"
    return found


def replaced(text: str, old: str, new: str) -> str:
    """text with its one occurrence of old replaced: a config that changed shape fails loudly."""
    assert text.count(old) == 1, f"expected {old!r} exactly once in the config"
    return text.replace(old, new)


@contextmanager
def server(args: list[str], log: Path, ready: str | int, stop: int) -> Iterator[None]:
    """Run args until the block ends; first wait until ready (a URL) answers 200, or until
    ready (a local port) accepts connections."""
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    check: Callable[[], bool] = (
        (lambda: HTTP.get(ready, timeout=1).status_code == 200)
        if isinstance(ready, str)
        else (lambda: _listening(ready))
    )
    try:
        wait_for(lambda: _ready(popen, check, log), 30, str(ready), 0.05)
        yield
    finally:
        if popen.poll() is None:
            popen.send_signal(stop)
        try:
            popen.wait(10)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)  # no worker may outlive its test
            popen.wait()


def _ready(popen: subprocess.Popen[bytes], check: Callable[[], bool], log: Path) -> bool:
    if popen.poll() is not None:
        raise AssertionError(f"{popen.args!r} exited early:\n{log.read_text(errors='replace')}")
    return check()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def gateway(api: str, status: str) -> Iterator[str]:
    """deploy/gateway/nginx.conf in front of api and status (HOST:PORT); yields its base URL."""
    port = free_port()
    config = GATEWAY_CONF.read_text()
    config = replaced(config, "set $herald_api api:8000;", f"set $herald_api {api};")
    config = replaced(config, "set $herald_status status:8001;", f"set $herald_status {status};")
    config = replaced(config, "listen 8080;", f"listen 127.0.0.1:{port};")
    with tempfile.TemporaryDirectory(prefix="herald-gateway-") as prefix:
        # As root, nginx's workers drop to an unprivileged user: they must reach the temp dirs.
        Path(prefix).chmod(0o755)
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(config)
        args = [binary("nginx"), "-p", f"{prefix}/", "-e", "stderr", "-c", str(conf)]
        url = f"http://127.0.0.1:{port}"
        with server(args, Path(prefix) / "nginx.log", f"{url}/healthz", signal.SIGQUIT):
            yield url


def prometheus_config(targets: Mapping[str, str], rule_files: list[str]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml scraping targets (job -> HOST:PORT) every second.

    Every job must be given a target, so a job added to the file cannot go untested. Each target
    gets the namespace label a Kubernetes Prometheus adds, so the adapter's query runs as is.
    """
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONF.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = rule_files
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), f"scrape jobs {sorted(jobs)}, targets for {sorted(targets)}"
    for name, job in jobs.items():
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[name]], "labels": {"namespace": "herald"}}]
    return config


@contextmanager
def prometheus(targets: Mapping[str, str]) -> Iterator[str]:
    """A real Prometheus with the project's scrape config and alert rules; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="herald-prometheus-") as directory:
        home = Path(directory)
        rules = str(DEPLOY / "prometheus" / "alerts.yml")
        config = prometheus_config({**targets, "prometheus": f"127.0.0.1:{port}"}, [rules])
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        args = [
            binary("prometheus"),
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with server(args, home / "prometheus.log", f"{url}/-/ready", signal.SIGTERM):
            yield url


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query; fails on a PromQL error."""
    answer = HTTP.get(f"{prometheus_url}/api/v1/query", params={"query": expr})
    body = answer.json()
    assert answer.status_code == 200, f"{expr}: {body}"
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@contextmanager
def pgbouncer(
    database: str, upstream: tuple[str, int], users: Mapping[str, str], pool_size: int
) -> Iterator[int]:
    """deploy/pgbouncer/pgbouncer.ini in front of database at upstream (host, port), for users
    (name -> password), with pool_size server connections per user; yields its port."""
    port = free_port()
    config = PGBOUNCER_CONF.read_text()
    config = replaced(config, "listen_addr = 0.0.0.0", "listen_addr = 127.0.0.1")
    config = replaced(config, "listen_port = 6432", f"listen_port = {port}")
    config = replaced(config, "default_pool_size = 20", f"default_pool_size = {pool_size}")
    host, server_port = upstream
    with tempfile.TemporaryDirectory(prefix="herald-pgbouncer-") as prefix:
        home = Path(prefix)
        home.chmod(0o755)  # as root, pgbouncer runs as nobody, who must read its files
        files = {
            "pgbouncer.ini": config.replace(PGBOUNCER_MOUNT, f"{home}/"),
            "databases.ini": f"{database} = host={host} port={server_port} dbname={database}\n",
            "userlist.txt": "".join(f'"{user}" "{password}"\n' for user, password in users.items()),
        }
        for name, text in files.items():
            (home / name).write_text(text)
            (home / name).chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        args = [binary("pgbouncer"), *user, str(home / "pgbouncer.ini")]
        with server(args, home / "pgbouncer.log", port, signal.SIGTERM):
            yield port
