"""The hello-world baseline: Falcon answering POST with a constant 202, served like the API.

It goes through the same `herald.core.web.serve` (gunicorn, worker class chosen there) with the
same workers and connections as `herald-api`, so a change of server settings moves both figures.
"""

from __future__ import annotations

import argparse

import falcon

from herald.core.green import patch_standard_library

ACCEPTED = {"id": "-" * 22, "status": "queued"}  # shaped like an ingest answer


class Accept:
    """POST /messages: read the body (as any real handler must), answer a constant 202."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.bounded_stream.read()
        resp.status = falcon.HTTP_202
        resp.media = ACCEPTED


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app() -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route("/messages", Accept())
    app.add_route("/healthz", Health())
    return app


def main(argv: list[str] | None = None) -> None:
    # Served exactly as herald-api is: the same early gevent patch (herald.core.green).
    patch_standard_library()
    from herald.core.settings import Settings
    from herald.core.web import serve

    settings = Settings()
    parser = argparse.ArgumentParser(prog="bench-hello", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8009", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--workers", type=int, default=settings.api_workers)
    parser.add_argument("--connections", type=int, default=settings.api_connections)
    args = parser.parse_args(argv)
    serve(
        create_app,
        service="hello",
        bind=args.bind,
        workers=args.workers,
        connections=args.connections,
        settings=settings,
    )


if __name__ == "__main__":
    main()
