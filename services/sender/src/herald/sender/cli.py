"""herald-sender: run the Dramatiq workers that deliver messages, plus their metrics server."""

from __future__ import annotations

import argparse
import sys
import tempfile

from herald.core.adapters.dramatiq import run_cli
from herald.core.db import session_settings
from herald.core.lifetime import exit_within, tolerate_lost_output
from herald.core.logs import configure_logging
from herald.core.metrics import use_multiprocess_dir
from herald.core.settings import Settings

# Seconds past the provider timeout that a stopping worker allows its in-flight sends.
SHUTDOWN_MARGIN = 2.0
# Seconds past the provider timeout by which every process of the sender has ended after its
# stop signal, whatever it was doing (herald.core.lifetime): inside the deployables' bound of
# HERALD_PROVIDER_TIMEOUT + 5 s, and after the graceful stop's own.
DEADLINE_MARGIN = 4.5


def dramatiq_args(settings: Settings, processes: int, threads: int) -> list[str]:
    """Dramatiq's command line for these workers, with the sidecar and the sweeper beside them."""
    shutdown_ms = round((settings.provider_timeout + SHUTDOWN_MARGIN) * 1000)
    return [
        "herald.sender.worker:setup",
        "--processes", str(processes),
        "--threads", str(threads),
        "--worker-shutdown-timeout", str(shutdown_ms),
        "--fork-function", "herald.sender.sidecar:serve",
        "--fork-function", "herald.sender.sweeper:run",
        "--skip-logging",  # every process logs JSON lines (herald.core.logs) instead
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="herald-sender", description=__doc__)
    parser.add_argument(
        "--processes", type=int, default=settings.sender_processes,
        help="worker processes (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=settings.sender_threads,
        help="worker threads per process (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # This process relays its workers' logs: with its parent gone, a relay that stopped at the
    # first EPIPE would leave the workers blocked on full pipes, never stopping.
    tolerate_lost_output()
    configure_logging(settings, "sender")
    try:
        # The sweeper builds its session engine in a fork process, whose death Dramatiq does
        # not notice: a missing session URL must stop the sender here, at boot, instead.
        session_settings(settings)
    except ValueError as error:
        parser.error(str(error))
    exit_within(settings.provider_timeout + DEADLINE_MARGIN)
    with tempfile.TemporaryDirectory(prefix="herald-metrics-") as metrics_dir:
        use_multiprocess_dir(settings, metrics_dir)
        code = run_cli(dramatiq_args(settings, args.processes, args.threads))
    sys.exit(code)
