"""The one place Herald reads its configuration: environment variables prefixed HERALD_."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, PostgresDsn, RedisDsn
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of every deployable, each with a default that works on a laptop."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", frozen=True)

    database_url: PostgresDsn = PostgresDsn("postgresql://postgres@127.0.0.1:5432/herald")
    redis_url: RedisDsn = RedisDsn("redis://127.0.0.1:6379/0")
    redis_namespace: str = Field("herald", pattern=r"^[A-Za-z0-9_.-]+$")

    # keys: every route of api and status but health, readiness, metrics and the API's
    # description needs `Authorization: Bearer <key>` (herald-keys). none: no key is asked for
    # and every request is tenant `default`, for a gateway that authenticates by itself.
    auth: Literal["keys", "none"] = "keys"

    # Accepted messages per second of each tenant across all api replicas, with a burst of one
    # second's worth (a batch counts its items); a key made with `herald-keys create --rate N`
    # has a bucket of its own at N instead. The buckets live in Redis (herald.api.ratelimit).
    tenant_rate: int = Field(1000, ge=1)

    provider_url: str = "http://127.0.0.1:3000"
    provider_timeout: float = Field(5.0, gt=0)

    max_retries: int = Field(5, ge=0)
    min_backoff_ms: int = Field(500, ge=1)
    max_backoff_ms: int = Field(60_000, ge=1)

    sweep_interval: float = Field(5.0, gt=0)
    stuck_after: float = Field(60.0, gt=0)
    # A sweeper leader silent this long (frozen, or cut off from PostgreSQL) loses leadership,
    # and another sender pod's sweeper takes over. Above the longest sweep cycle.
    leader_timeout: float = Field(30.0, ge=1)

    # Database pool per process (api, status), beside each worker's direct connections. It
    # serves the paths off the group-committed hot ones (Idempotency-Key, cancel, retry, the
    # list, readiness); a request holds a connection only for its transaction.
    # docs/operations.md, "Connection budget", counts every connection per process.
    db_pool_size: int = Field(4, ge=1)
    db_connect_timeout: float = Field(2.0, gt=0)
    db_pool_timeout: float = Field(2.0, gt=0)
    # database_url through a transaction-mode pooler (PgBouncer; docs/operations.md): Herald
    # sends no startup `options` (PgBouncer refuses them) and checks each new connection for
    # the role's own defaults, TimeZone UTC and a statement_timeout, instead; and it uses no
    # named prepared statements unless database_prepared_statements is true (PgBouncer >= 1.21
    # with max_prepared_statements > 0; unset: only without the pooler). What needs a session
    # of its own (the sweeper's leadership lock, herald-migrate) connects straight to
    # PostgreSQL at database_session_url (unset: database_url; required with the pooler).
    database_transaction_pooling: bool = False
    database_prepared_statements: bool | None = None
    database_session_url: PostgresDsn | None = None
    # A dead Redis must not hold up an ingest answer: the row is durable, the sweeper re-enqueues.
    redis_socket_timeout: float = Field(0.5, gt=0)

    # gunicorn worker processes, and the requests each serves at once (gevent greenlets; more
    # wait in the listen backlog). Concurrent ingest requests share one commit (group commit).
    api_workers: int = Field(2, ge=1)
    api_connections: int = Field(1000, ge=1)
    status_workers: int = Field(2, ge=1)
    status_connections: int = Field(1000, ge=1)
    # Overload (herald.core.admission; docs/operations.md, "Overload"): each api / status worker
    # process works on at most *_max_in_flight requests at once; the next waits for a place at
    # most queue_wait_ms, else is answered 503 with Retry-After, and that connection is not
    # read again for shed_pause_ms (a client ignoring Retry-After is paced, yet answered within
    # a second: keep their sum under ~800 ms). Health, readiness and metrics always pass.
    api_max_in_flight: int = Field(128, ge=1)
    status_max_in_flight: int = Field(128, ge=1)
    queue_wait_ms: int = Field(300, ge=0, le=900)
    shed_pause_ms: int = Field(200, ge=0, le=900)

    sender_processes: int = Field(2, ge=1)
    # Sends in flight per process (each thread waits on one): enough to keep up with a slow
    # provider; at 50 ms, 2 x 128 measured ~1,300-1,500 msg/s here, 2 x 64 ~900-1,000.
    sender_threads: int = Field(128, ge=1)
    # The longest an idle send consumer waits between polls of Redis. New sends wake it at once
    # (herald.core.adapters.dramatiq.PollingBroker); only a retry whose backoff ended may wait
    # this long.
    sender_poll_ms: int = Field(100, ge=1)
    sender_metrics_port: int = Field(9191, ge=0, le=65535)

    messageapp_latency_ms: float = Field(0.0, ge=0)
    messageapp_failure_rate: float = Field(0.0, ge=0, le=1)

    log_level: str = "INFO"
    # json: one object per line, for containers and CI, where a collector parses them. console:
    # readable coloured lines for a person at a terminal; `make run` picks it when its own
    # stdout is a terminal (its children write to a pipe, so they cannot tell by themselves).
    log_format: Literal["json", "console"] = "json"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg 3 driver, whatever driver the operator wrote."""
        return f"postgresql+psycopg://{self._database_location}"

    @property
    def libpq_url(self) -> str:
        """The database URL as libpq (psycopg's own connections) reads it: no driver name.

        Operators write SQLAlchemy's form (postgresql+psycopg://) as often as libpq's.
        """
        return f"postgresql://{self._database_location}"

    @property
    def _database_location(self) -> str:
        return str(self.database_url).split("://", 1)[1]

    def child_environment(self, **extra: str) -> dict[str, str]:
        """The environment of a child process run with these settings: this process's, minus
        any HERALD_*, plus every setting spelled as HERALD_* (as an operator would set them)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        for name, value in self.model_dump(mode="json", exclude_none=True).items():
            env[f"HERALD_{name.upper()}"] = str(value)  # unset (None): the default again
        env.update(extra)
        return env

    def export_metrics_dir(self, path: str) -> None:
        """prometheus-client finds its multiprocess directory in the environment: give it one."""
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
