"""The sender stops on SIGTERM whatever happened to its parent, its output or its boot.

Every deployable exits within HERALD_PROVIDER_TIMEOUT + 5 s of SIGTERM, and nothing of its
process group is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest

from herald.core.settings import Settings
from tests.stack import BIN, HTTP, Stack, launch, running_stack, wait_for

# Runs argv in a new session (its own process group), its output through a pipe that only
# this parent reads and copies to its own stdout: kill the parent, and the pipe's reader is gone.
PARENT = """
import subprocess, sys
child = subprocess.Popen(
    sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
)
for line in child.stdout:
    sys.stdout.buffer.write(line)
    sys.stdout.flush()
"""


@pytest.fixture
def idle_stack(settings: Settings) -> Iterator[Stack]:
    with running_stack(settings, sender=False) as stack:
        yield stack


def _sender_args(threads: int) -> list[str]:
    return [str(BIN / "herald-sender"), "--processes", "2", "--threads", str(threads)]


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


def _post(stack: Stack, body: str) -> str:
    return stack.post(body)


def _delivered(stack: Stack) -> int:
    unique: int = HTTP.get(f"{stack.provider}/stats").json()["unique"]
    return unique


def test_a_sender_whose_parent_was_killed_stops_in_time_and_loses_nothing(
    idle_stack: Stack, tmp_path: Path
) -> None:
    stack, settings = idle_stack, idle_stack.settings
    answer = HTTP.put(f"{stack.provider}/config", json={"latency_ms": 100})
    assert answer.status_code == 200, answer.text
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: _post(stack, f"m{n}"), range(600)))
    # DEBUG: Dramatiq logs each message several times, far more than a pipe holds (64 KiB).
    env = settings.child_environment(HERALD_LOG_LEVEL="DEBUG")
    with (tmp_path / "parent.log").open("wb") as log:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, *_sender_args(threads=4)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    sender = None
    try:
        sender = wait_for(lambda: psutil.Process(parent.pid).children(), 20, "the sender")[0]
        wait_for(lambda: _delivered(stack) >= 20, 60, "the first deliveries")
        parent.kill()  # the sender's output now has no reader
        parent.wait()
        before = _delivered(stack)
        # Far past a full pipe: a sender that no longer drains its workers' logs stalls here.
        wait_for(lambda: _delivered(stack) >= before + 100, 30, "deliveries after the parent")
        started = time.monotonic()
        sender.send_signal(signal.SIGTERM)  # the main process only, as Kubernetes does
        took = _stop_time(sender.pid, started, settings.provider_timeout + 10)
        _assert_group_stops(sender.pid, took, settings.provider_timeout + 5)
    finally:
        _kill_group(parent.pid)
        if sender is not None:
            _kill_group(sender.pid)
        parent.wait()
    statuses = {stack.status_of(message_id) for message_id in ids}
    assert statuses <= {"sent", "queued"}  # in-flight sends finished, nothing claimed is left


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
        # machine, up to its 30 s fork timeout); from then on, the usual bound. Before the fix
        # the group never stopped at all.
        took = _stop_time(main.pid, started, 90)
        _assert_group_stops(main.pid, took, 60)
    except AssertionError:
        print(sender.output())
        raise
    finally:
        sender.kill_group()
