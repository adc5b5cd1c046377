"""herald-api: serve the ingest API on gunicorn."""

from __future__ import annotations

from herald.api.app import app_factory
from herald.core.web import http_main


def main(argv: list[str] | None = None) -> None:
    http_main(
        argv,
        service="api",
        description=__doc__,
        default_bind="127.0.0.1:8000",
        build=app_factory,
        pool=lambda settings: (settings.api_workers, settings.api_threads),
    )
