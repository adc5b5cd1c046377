"""gevent for the HTTP deployables: the standard library made cooperative before anything uses it.

gunicorn's gevent worker patches the standard library itself, but only in each worker, after
the master imported everything. psycopg chooses how it waits on sockets when it is imported (a
blocking C poll unless `select` is already patched), so a late patch leaves every query
blocking the whole worker. The HTTP deployables' command lines call patch_standard_library()
first, before importing anything else of Herald's.
"""

from __future__ import annotations


def patch_standard_library() -> None:
    """Make sockets, selectors, threads, locks and sleeps cooperative (gevent), in this process
    and the workers it forks. Call it first, before the imports that capture them."""
    from gevent import monkey  # type: ignore[import-untyped]  # gevent ships no type hints

    monkey.patch_all()
