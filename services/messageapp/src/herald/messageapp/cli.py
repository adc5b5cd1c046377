"""herald-messageapp: serve the stand-in provider on uvicorn, one process, one event loop."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

import uvicorn

from herald.core.settings import Settings
from herald.messageapp.app import create_app

# In-flight calls may be sleeping a test's "hang" latency: give them this long after SIGTERM,
# well inside the deployables' shutdown bound (provider timeout + 5 s).
GRACEFUL_SHUTDOWN_SECONDS = 2


def parse_bind(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 hosts in brackets) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done; by then nothing is
    # lost, so exit 0 like the gunicorn deployables instead of dying by the signal.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in provider until SIGTERM/SIGINT."""
    settings = Settings()
    parser = argparse.ArgumentParser(prog="herald-messageapp", description=__doc__)
    parser.add_argument(
        "--bind",
        type=parse_bind,
        default="127.0.0.1:3000",
        help="HOST:PORT (default %(default)s)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn's (default %(default)s)")
    args = parser.parse_args(argv)
    host, port = args.bind
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=args.log_level,
        # One line per call would cost more than the call itself under load tests.
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
