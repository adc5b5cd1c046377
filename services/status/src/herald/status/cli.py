"""herald-status: serve the read-only status service on gunicorn."""

from __future__ import annotations

import argparse

from herald.core.settings import Settings
from herald.core.web import serve
from herald.status.app import app_factory


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="herald-status", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8001", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--workers", type=int, default=settings.status_workers)
    parser.add_argument("--threads", type=int, default=settings.status_threads)
    args = parser.parse_args(argv)
    serve(
        lambda: app_factory(settings),
        service="status",
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        settings=settings,
    )
