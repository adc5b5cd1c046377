"""Herald's processes and the load generators as children: start, wait, measure, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

# The venv's bin directory (not resolved: sys.executable is a symlink into it).
BIN = Path(sys.executable).parent


@dataclass
class Child:
    """One child process (its own process group), its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the main process (in-flight work finishes), then clear the whole group."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"bench: {self.name} ignored SIGTERM for {timeout} s; killing it")
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def launch(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> Child:
    """Start argv (argv[0] found in the venv's bin when it is there) in its own process group."""
    program = str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0]
    log = log_dir / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            [program, *argv[1:]],
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, popen, log)


def python_module(module: str, *args: str) -> list[str]:
    """argv running a bench module with this interpreter."""
    return [sys.executable, "-m", module, *args]


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll check until it is true; SystemExit naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with suppress(httpx.HTTPError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_healthy(child: Child, url: str, timeout: float = 60.0) -> None:
    """Wait until url answers 200; fail with the child's log if it exits or never answers."""

    def healthy() -> bool:
        if not child.alive():
            raise SystemExit(f"bench: {child.name} exited early:\n{child.output()}")
        return httpx.get(url, timeout=1).status_code == 200

    try:
        wait_until(healthy, timeout, f"{child.name} at {url}")
    except SystemExit:
        child.stop()
        raise SystemExit(f"bench: {child.name} did not come up:\n{child.output()}") from None
