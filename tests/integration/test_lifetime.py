"""herald.core.lifetime on real processes: deadlines, parents that die, readers that are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest

from herald.core.lifetime import OVERDUE
from tests.stack import wait_for

pytestmark = pytest.mark.timeout(60)
Start = Callable[..., tuple[subprocess.Popen[str], list[int]]]

# A process that does not stop by itself: SIGTERM does nothing, a non-daemon thread never
# ends. It prints its pid (and its child's, with CHILD) once its deadline is armed.
STUBBORN = textwrap.dedent("""
    import multiprocessing, os, signal, sys, threading, time
    from herald.core.lifetime import exit_within
    exit_within(0.5)
    signal.signal(signal.SIGTERM, lambda *_: None)  # a stop that does nothing
    threading.Thread(target=time.sleep, args=(3600,)).start()  # and a thread nobody stops

    def child(ignore):
        if ignore:  # no stop signal ever reaches its own deadline
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)

    if len(sys.argv) > 1:
        process = multiprocessing.get_context("fork").Process(
            target=child, args=(sys.argv[1] == "ignore",)
        )
        process.start()
        print(process.pid, flush=True)
    print(os.getpid(), flush=True)
    time.sleep(3600)
""")


@pytest.fixture
def start() -> Iterator[Start]:
    """Start STUBBORN (and its child); whatever of them is left is killed afterwards."""
    started: list[int] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], list[int]]:
        popen = subprocess.Popen(
            [sys.executable, "-c", STUBBORN, *args], stdout=subprocess.PIPE, text=True
        )
        assert popen.stdout is not None
        pids = [int(popen.stdout.readline()) for _ in range(2 if args else 1)]
        started.extend(pids)
        return popen, pids

    yield start
    for pid in started:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exited(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_a_process_that_would_not_stop_ends_at_its_deadline_after_sigterm(start: Start) -> None:
    popen, _ = start()
    time.sleep(1)
    assert popen.poll() is None  # the deadline counts from the stop signal only
    started = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(10) == OVERDUE
    assert time.monotonic() - started < 2


def test_at_its_deadline_a_process_kills_the_children_it_forked(start: Start) -> None:
    popen, (child, _) = start("ignore")
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(10) == OVERDUE
    wait_for(lambda: _exited(child), 3, "the child to be killed")


def test_a_forked_child_gets_sigterm_when_its_parent_dies_then_ends_at_its_deadline(
    start: Start,
) -> None:
    popen, (child, _) = start("keep")
    popen.kill()
    popen.wait()
    wait_for(lambda: _exited(child), 5, "the orphaned child to end")


def test_output_whose_reader_is_gone_is_dropped_and_never_raises(tmp_path: Path) -> None:
    done = tmp_path / "done"
    script = textwrap.dedent(f"""
        import logging, sys
        from herald.core.lifetime import tolerate_lost_output
        tolerate_lost_output()
        logging.basicConfig(stream=sys.stderr)
        sys.stdin.read()  # until the test closed our output's reader
        for n in range(10_000):
            print("line", n)
            logging.warning("line %d", n)
        open({str(done)!r}, "w").close()
    """)
    popen = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert popen.stdout is not None
    assert popen.stdin is not None
    popen.stdout.close()  # the only reader
    popen.stdin.close()
    assert popen.wait(20) == 0
    assert done.exists()
