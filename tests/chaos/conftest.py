"""Fixtures of the chaos tests: private servers, settings for quick recovery, the stack, figures.

Nothing here touches the machine's shared PostgreSQL or Redis: the settings point at servers
this test started, which it may crash and restart.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from dev.embedded import EmbeddedPostgres, EmbeddedRedis
from herald.core.db import make_engine
from herald.core.migrate import upgrade
from herald.core.settings import Settings
from tests.chaos.figures import Figures, report
from tests.chaos.servers import herald_url, private_postgres, private_redis
from tests.stack import Stack, running_stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's outcome on the item, so teardown knows whether to keep the logs."""
    report = yield
    setattr(item, f"chaos_{report.when}_failed", report.failed)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(request.node, f"chaos_{when}_failed", False) for when in ("setup", "call"))


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL cluster of this test's own, on a free port."""
    with private_postgres() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, on a free port, every write fsynced to its AOF."""
    with private_redis() as server:
        yield server


@pytest.fixture
def chaos_settings(postgres: EmbeddedPostgres, redis_server: EmbeddedRedis) -> Settings:
    """Settings on the private servers, migrated, tuned so that recovery takes seconds."""
    settings = Settings(
        database_url=herald_url(postgres),
        redis_url=redis_server.url(),
        redis_namespace="herald-chaos",
        provider_timeout=1.0,
        # Lost queue messages and dead workers' claims are found within ~3 s, not minutes.
        stuck_after=2.0,
        sweep_interval=0.5,
        max_retries=10,
        min_backoff_ms=50,
        max_backoff_ms=500,
        status_workers=1,  # the 2-core machine runs two tests at once; status sees little load
    )
    engine = make_engine(settings, pool_size=1)
    upgrade(engine)
    engine.dispose()
    return settings


@pytest.fixture
def idle_stack(
    chaos_settings: Settings,
    postgres: EmbeddedPostgres,
    redis_server: EmbeddedRedis,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """api, status and the stand-in provider on the private servers; no sender yet.

    On failure every log (the servers' included) is kept and its directory named.
    """
    with running_stack(chaos_settings, sender=False) as stack:
        yield stack
        if _failed(request):
            keep = Path(tempfile.mkdtemp(prefix=f"herald-chaos-logs-{request.node.name[:40]}-"))
            shutil.copytree(stack.log_dir, keep, dirs_exist_ok=True)
            for log in (postgres.log, redis_server.log):
                if log.exists():
                    shutil.copy(log, keep / log.name)
            print(f"\nchaos: logs kept in {keep}\n{stack.logs()}")


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Figures:
    """figures(name=value, ...): report this test's measurements (see tests.chaos.figures)."""
    return lambda **values: report(request.node.name, values, record_property)
