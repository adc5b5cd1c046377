"""herald-status: serve the read-only status service on gunicorn."""

from __future__ import annotations

from herald.core.green import patch_standard_library


def main(argv: list[str] | None = None) -> None:
    patch_standard_library()
    # Imported after the patch, so that psycopg waits cooperatively (herald.core.green).
    from herald.core.web import http_main
    from herald.status.app import app_factory

    http_main(
        argv,
        service="status",
        description=__doc__,
        default_bind="127.0.0.1:8001",
        build=app_factory,
        pool=lambda settings: (
            settings.status_workers,
            settings.status_connections,
            settings.status_max_in_flight,
        ),
    )
