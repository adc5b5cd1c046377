"""herald-api: serve the ingest API on gunicorn."""

from __future__ import annotations

from herald.core.green import patch_standard_library


def main(argv: list[str] | None = None) -> None:
    patch_standard_library()
    # Imported after the patch, so that psycopg and redis-py wait cooperatively (herald.core.green).
    from herald.api.app import app_factory
    from herald.core.web import http_main

    http_main(
        argv,
        service="api",
        description=__doc__,
        default_bind="127.0.0.1:8000",
        build=app_factory,
        pool=lambda settings: (
            settings.api_workers,
            settings.api_connections,
            settings.api_max_in_flight,
        ),
    )
