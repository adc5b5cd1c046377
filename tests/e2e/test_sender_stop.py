"""The sender stops on SIGTERM whatever happened to its parent, its output or its boot.

Every deployable exits within HERALD_PROVIDER_TIMEOUT + 5 s of SIGTERM, and nothing of its
process group is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

from herald.core.settings import Settings
from tests.stack import launch, wait_for


def _exited(pid: int) -> bool:
    """Gone, or a zombie: an orphan's reaper (PID 1 here) may take seconds to collect it."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _running_in_group(pgid: int) -> list[int]:
    running = []
    for process in psutil.process_iter():
        with suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and not _exited(process.pid):
                running.append(process.pid)
    return running


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _stop_time(pid: int, started: float, limit: float) -> float:
    """Seconds from started until pid exited (limit when it did not)."""
    with suppress(AssertionError):
        wait_for(lambda: _exited(pid), limit, f"process {pid} to exit")
    return time.monotonic() - started


def _assert_group_stops(pgid: int, took: float, bound: float) -> None:
    """The group's leader exited within bound seconds, and nothing of its group runs on."""
    try:
        assert took <= bound, f"the sender took {took:.1f} s to exit"
        # Its children are waited for by the leader, which has exited.
        assert _running_in_group(pgid) == []
    finally:
        _kill_group(pgid)


def test_a_sigterm_to_the_group_while_its_workers_boot_still_stops_it(
    settings: Settings, tmp_path: Path
) -> None:
    # honcho and systemd signal the whole group; Dramatiq's main process forwards one more.
    # Here the group's signal reaches each worker before the worker has loaded Herald (a
    # Ctrl-C just after `make run`): the forwarded one is then that worker's second.
    sender = launch(
        "sender", ["herald-sender", "--processes", "2"], settings.child_environment(), tmp_path
    )
    try:
        main = psutil.Process(sender.popen.pid)
        wait_for(lambda: len(main.children()) >= 2 or None, 20, "the worker processes", 0.005)
        started = time.monotonic()
        os.killpg(sender.popen.pid, signal.SIGTERM)
        # Dramatiq's main process holds its signals until the workers have booted (on a busy
        # machine, seconds); from then on, the usual bound.
        took = _stop_time(main.pid, started, 60)
        _assert_group_stops(main.pid, took, 30)
    except AssertionError:
        print(sender.output())
        raise
    finally:
        sender.kill_group()
