"""How a process ends: within a bound of its stop signal, with its parent, without a reader.

A graceful stop can be defeated by what no stop sequence controls: a library's stop that
raised half way, a thread nobody stops, a thread blocked on a pipe nobody reads, a parent
that was killed. These bounds do not replace the graceful stop; they end what it did not.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO, cast

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOP_NUMBERS = frozenset(int(signum) for signum in STOP_SIGNALS)
# The exit code of a process its deadline ended (as timeout(1) exits).
OVERDUE = 124
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Linux: sig reaches this process when its parent ends, or at once if it already has.

    The kernel watches the thread that forked this process, not the process: call it only
    when that thread lives as long as its process (a main thread). parent: the pid that
    forked this process, when known. Elsewhere than on Linux this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    expected = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected:  # the parent ended before the kernel watched it
        os.kill(os.getpid(), sig)


def watch_parent(sig: int = signal.SIGTERM, interval: float = 0.5) -> None:
    """sig reaches this process within interval seconds of its parent's end, whoever forked it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), sig)

    with _stop_signals_blocked():
        threading.Thread(target=watch, name="herald-parent-watch", daemon=True).start()


def stop_event() -> threading.Event:
    """An event that this process's SIGTERM and SIGHUP set, instead of whatever they did."""
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)
    return stop


class _Deadline:
    """A thread that ends the process `seconds` after the first stop signal it hears of.

    It hears of them through signal.set_wakeup_fd, which the interpreter writes to whatever
    Python handler a signal has (installed before or after this), so no handler is wrapped.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.owner = os.getpid()
        self._read, self._write = os.pipe()

    def start(self) -> None:
        os.set_blocking(self._write, False)
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        with _stop_signals_blocked():
            threading.Thread(target=self._watch, name="herald-stop-deadline", daemon=True).start()

    def forget(self) -> None:
        """In a fork: the parent's pipe is not this process's to watch."""
        os.close(self._read)
        os.close(self._write)

    def _watch(self) -> None:
        while True:
            heard = os.read(self._read, 64)
            if not heard:
                return
            if _STOP_NUMBERS.intersection(heard):
                break
        time.sleep(self.seconds)
        for child in multiprocessing.active_children():
            if child.pid:  # never 0: that would be the whole process group
                with suppress(OSError):
                    os.kill(child.pid, signal.SIGKILL)
        os._exit(OVERDUE)  # no cleanup: a cleanup is what may be stuck


_deadline: _Deadline | None = None


def exit_within(seconds: float) -> None:
    """This process and each it forks end within seconds of their first stop signal.

    A stop signal is SIGTERM, SIGINT or SIGHUP. Past the deadline a process SIGKILLs its
    multiprocessing children and leaves with os._exit(OVERDUE). Each process forked from now
    on gets a deadline of its own, and SIGTERM when its parent ends. Call it once, from the
    main thread, before any fork.
    """
    global _deadline
    if _deadline is None:
        os.register_at_fork(after_in_child=_after_fork)
    else:
        raise RuntimeError("exit_within was called already")
    _deadline = _Deadline(seconds)
    _deadline.start()


def _after_fork() -> None:
    # A fork has none of its parent's threads and shares its pipe: it gets a deadline of its own.
    global _deadline
    if _deadline is None:
        return
    parent = _deadline.owner  # the parent may be gone already: getppid() would not tell
    _deadline.forget()
    _deadline = _Deadline(_deadline.seconds)
    _deadline.start()
    die_with_parent(signal.SIGTERM, parent)


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    # A thread started in here keeps them blocked: they go to the main thread, whose mask
    # the process's owner (Dramatiq blocks them while it forks) decides.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Tolerant:
    """A text stream whose writes go to /dev/null once its reader is gone, instead of raising."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            self._stream.write(text)
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _to_devnull(self) -> None:
        # Every later write to the descriptor, ours or a library's, succeeds and goes nowhere;
        # the text the failed write left in the buffer goes there too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        self._stream.flush()


def tolerate_lost_output() -> None:
    """stdout and stderr never raise for a reader that is gone (EPIPE): what follows is dropped.

    A process that relays its children's output (Dramatiq's main process relays its workers'
    logs) stops relaying at the first such error, and its children then block on a full pipe.
    """
    sys.stdout = cast(TextIO, _Tolerant(sys.stdout))
    sys.stderr = cast(TextIO, _Tolerant(sys.stderr))
