"""`make run`: migrate, then run every Herald deployable on this machine, logs interleaved.

Uses the PostgreSQL and Redis that HERALD_DATABASE_URL and HERALD_REDIS_URL point at when they
answer; otherwise starts embedded ones (data in `.herald-dev/` at the repository root) and stops
them again when the deployables exit. Ctrl-C, SIGTERM or the end of its parent stops
everything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from herald.core.lifetime import watch_parent

# Run as a script, dev/ is on sys.path and its sibling modules are `embedded` and
# `honcho_adapter`; mypy, which checks dev/ from the repository root, knows them as `dev.*`.
if TYPE_CHECKING:
    from dev.devkey import dev_key
    from dev.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis
    from dev.honcho_adapter import add_process, make_manager
else:
    from devkey import dev_key
    from embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis
    from honcho_adapter import add_process, make_manager

REPO: Final = Path(__file__).resolve().parents[1]
DEV_DATA: Final = REPO / ".herald-dev"
# The venv's bin directory (not resolved: sys.executable is a symlink into it).
BIN: Final = Path(sys.executable).parent

DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/herald"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
PROVIDER_URL: Final = "http://127.0.0.1:3000"

# What `make run` starts: process name -> console script and its arguments.
PROCESSES: Final[dict[str, tuple[str, ...]]] = {
    "api": ("herald-api", "--bind", "127.0.0.1:8000"),
    "status": ("herald-status", "--bind", "127.0.0.1:8001"),
    "sender": ("herald-sender",),
    "messageapp": ("herald-messageapp", "--bind", "127.0.0.1:3000"),
}

# honcho SIGKILLs whatever still runs this long after its SIGTERM (its default is 5 s); a
# deployable may take HERALD_PROVIDER_TIMEOUT (default 5 s) + 5 s to drain, so allow that and some.
KILL_WAIT_SECONDS: Final = 15


class DevRunError(RuntimeError):
    """`make run` cannot go on; the message says why."""


def say(line: str) -> None:
    print(f"herald-dev: {line}", file=sys.stderr, flush=True)


def redact(url: str) -> str:
    """The URL with its password masked, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def libpq_url(url: str) -> str:
    """`url` as libpq spells it: SQLAlchemy's `postgresql+psycopg://` becomes `postgresql://`."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def postgres_problem(url: str) -> str | None:
    """None when the server of `url` answers (at its `postgres` database), else why not."""
    # The maintenance database, not `url`'s own: it may not exist yet, and we create it.
    try:
        with psycopg.connect(make_conninfo(url, dbname="postgres"), connect_timeout=2):
            return None
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]


def ensure_database(url: str) -> None:
    """Create the database `url` names unless it exists (CREATE DATABASE needs autocommit)."""
    name = conninfo_to_dict(url).get("dbname") or "postgres"
    admin_url = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin_url, connect_timeout=2, autocommit=True) as admin:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if admin.execute(query, (name,)).fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a concurrent run won
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
                say(f"created database {name}")


def provide_postgres(url: str, cleanup: contextlib.ExitStack) -> str:
    """A working database URL: `url` when its server answers, else an embedded server's."""
    problem = postgres_problem(libpq_url(url))
    if problem is None:
        ensure_database(libpq_url(url))
        say(f"PostgreSQL: external, {redact(url)}")
        return url
    say(f"PostgreSQL at {redact(url)} unreachable ({problem}); starting an embedded one")
    server = EmbeddedPostgres(DEV_DATA / "pg")
    cleanup.callback(_uninterrupted, server.stop)
    server.start()
    embedded_url = server.url(str(conninfo_to_dict(libpq_url(url)).get("dbname") or "herald"))
    ensure_database(embedded_url)
    say(f"PostgreSQL: embedded, {embedded_url} (data in {server.datadir}, log {server.log})")
    return embedded_url


def redis_problem(url: str) -> str | None:
    """None when the Redis at `url` answers PING within about a second, else why not."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
        return None
    except (redis.RedisError, OSError) as error:
        return str(error) or type(error).__name__
    finally:
        client.close()


def provide_redis(url: str, cleanup: contextlib.ExitStack) -> str:
    """A working Redis URL: `url` when it answers, else an embedded server's (same db number)."""
    problem = redis_problem(url)
    if problem is None:
        say(f"Redis: external, {redact(url)}")
        return url
    say(f"Redis at {redact(url)} unreachable ({problem}); starting an embedded one")
    server = EmbeddedRedis(DEV_DATA / "redis")
    cleanup.callback(_uninterrupted, server.stop)
    server.start()
    db = urlsplit(url).path.strip("/") or "0"
    embedded_url = server.url(int(db) if db.isdigit() else 0)
    say(f"Redis: embedded, {embedded_url} (data in {server.datadir}, log {server.log})")
    return embedded_url


def _uninterrupted(stop: Callable[[], None]) -> None:
    # A second Ctrl-C while a server stops must not leave it running.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop()
    finally:
        signal.signal(signal.SIGINT, previous)


def build_environment(cleanup: contextlib.ExitStack) -> dict[str, str]:
    """The children's environment: ours, with working server URLs and the local provider."""
    env = dict(os.environ)
    database_url = env.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL)
    env["HERALD_DATABASE_URL"] = provide_postgres(database_url, cleanup)
    env["HERALD_REDIS_URL"] = provide_redis(env.get("HERALD_REDIS_URL", DEFAULT_REDIS_URL), cleanup)
    env.setdefault("HERALD_PROVIDER_URL", PROVIDER_URL)
    # Through honcho's pipes Python would buffer its output; logs should appear as they happen.
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The children write into honcho's pipes, so only we can tell whether a person is watching.
    env.setdefault("HERALD_LOG_FORMAT", "console" if sys.stdout.isatty() else "json")
    return env


def migrate(env: dict[str, str]) -> None:
    """Run herald-migrate; the deployables are not started on an old or missing schema."""
    try:
        done = subprocess.run([str(BIN / "herald-migrate")], env=env, cwd=REPO, check=False)
    except OSError as error:
        raise DevRunError(f"cannot run herald-migrate: {error}") from error
    if done.returncode != 0:
        raise DevRunError(f"herald-migrate failed (exit code {done.returncode}); started nothing")


def announce_key(env: dict[str, str]) -> None:
    """Print a ready key of tenant `dev` (made once, kept in .herald-dev/dev-key)."""
    if env.get("HERALD_AUTH", "keys") == "none":
        return
    key = dev_key(env["HERALD_DATABASE_URL"], DEV_DATA / "dev-key")
    say(f"key of tenant dev, for Authorization: Bearer <key>: {key}")
    say("in another shell: export HERALD_KEY=$(cat .herald-dev/dev-key)")


def run_processes(env: dict[str, str]) -> int:
    """Run PROCESSES under honcho until one exits or we get SIGINT/SIGTERM; its exit code.

    They end with this process, even killed (SIGKILL): see honcho_adapter.
    """
    manager = make_manager(KILL_WAIT_SECONDS)
    for name, (script, *args) in PROCESSES.items():
        add_process(manager, name, [str(BIN / script), *args], env=env, cwd=str(REPO))
    # honcho handles SIGINT and SIGTERM from here on (and still does while we clean up after).
    manager.loop()
    return int(manager.returncode or 0)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Until honcho takes over, SIGTERM unwinds like Ctrl-C so embedded servers are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    # Whoever started us is gone (a closed terminal, a killed make or supervisor): stop all,
    # as on SIGTERM, rather than leave the deployables and servers running unattended.
    watch_parent(signal.SIGTERM)
    try:
        with contextlib.ExitStack() as cleanup:
            env = build_environment(cleanup)
            migrate(env)
            announce_key(env)
            return run_processes(env)
    except KeyboardInterrupt:
        say("interrupted; stopped")
        return 130
    except (DevRunError, EmbeddedError) as error:
        say(f"ERROR: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
