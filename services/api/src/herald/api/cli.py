"""herald-api: serve the ingest API on gunicorn."""

from __future__ import annotations

import argparse

from herald.api.app import app_factory
from herald.core.settings import Settings
from herald.core.web import serve


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="herald-api", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--workers", type=int, default=settings.api_workers)
    parser.add_argument("--threads", type=int, default=settings.api_threads)
    args = parser.parse_args(argv)
    serve(
        lambda: app_factory(settings),
        service="api",
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        settings=settings,
    )
