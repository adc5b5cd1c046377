"""`make run` (dev/run.py) leaves no process behind: after Ctrl-C, its parent's end, or its own.

Each test runs dev/run.py with every deployable on free ports against this test's database
and Redis namespace, waits until all of them answer, then ends it one way and checks that
every process it started (honcho's readers, the deployables and their workers) is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest

from dev.embedded import free_port
from herald.core.settings import Settings
from tests.stack import HTTP, wait_for

pytestmark = pytest.mark.timeout(180)

DEV = Path(__file__).parents[2] / "dev"
# dev/run.py as `make run` runs it, but with the ports this test chose.
DRIVER = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {str(DEV)!r})
    import run
    run.PROCESSES = {{name: tuple(argv) for name, argv in json.loads(sys.argv[1]).items()}}
    sys.exit(run.main())
""")
# A parent for dev/run.py that only waits: the test kills it.
PARENT = "import subprocess, sys; subprocess.run(sys.argv[1:])"


@dataclass
class Command:
    """dev/run.py's command line and environment, and the health URLs of what it starts."""

    argv: list[str]
    env: dict[str, str]
    health: list[str]


@dataclass
class DevRun:
    popen: subprocess.Popen[bytes]  # dev/run.py, or its parent
    command: Command
    log: Path

    def started(self) -> list[psutil.Process]:
        """Wait until every deployable answers; every process started by then, below popen."""
        for url in self.command.health:
            wait_for(partial(self._healthy, url), 90, url, 0.1)
        return list(psutil.Process(self.popen.pid).children(recursive=True))

    def _healthy(self, url: str) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"dev/run.py ended early:\n{self.log.read_text()[-4000:]}")
        return HTTP.get(url, timeout=1).status_code == 200


Launch = Callable[[Command, bool], DevRun]


def _exited(process: psutil.Process) -> bool:
    """Gone, or a zombie: an orphan's reaper (PID 1 here) may take seconds to collect it."""
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _assert_all_end(processes: list[psutil.Process], within: float) -> None:
    try:
        wait_for(lambda: all(map(_exited, processes)), within, "every process to end", 0.1)
    finally:
        for process in processes:
            with suppress(psutil.Error):
                process.kill()


@pytest.fixture
def command(settings: Settings) -> Command:
    """dev/run.py with every deployable on free ports, one worker each."""
    api, status, provider, metrics = (free_port() for _ in range(4))
    processes = {
        "api": ["herald-api", "--bind", f"127.0.0.1:{api}", "--workers", "1"],
        "status": ["herald-status", "--bind", f"127.0.0.1:{status}", "--workers", "1"],
        "sender": ["herald-sender", "--processes", "1", "--threads", "4"],
        "messageapp": ["herald-messageapp", "--bind", f"127.0.0.1:{provider}"],
    }
    env = settings.model_copy(
        update={"provider_url": f"http://127.0.0.1:{provider}", "sender_metrics_port": metrics}
    ).child_environment()
    health = [f"http://127.0.0.1:{port}/healthz" for port in (api, status, provider, metrics)]
    return Command([sys.executable, "-c", DRIVER, json.dumps(processes)], env, health)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start dev/run.py (under a parent that only waits, with parent=True) in a new session,
    as a terminal's foreground process group; whatever a failed test left is killed after."""
    runs: list[DevRun] = []

    def launch(command: Command, parent: bool) -> DevRun:
        argv = [sys.executable, "-c", PARENT, *command.argv] if parent else command.argv
        log = tmp_path / "devrun.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                argv, env=command.env, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        runs.append(DevRun(popen, command, log))
        return runs[-1]

    yield launch
    for run in runs:
        with suppress(psutil.Error):
            for process in psutil.Process(run.popen.pid).children(recursive=True):
                process.kill()
        with suppress(ProcessLookupError):
            os.killpg(run.popen.pid, signal.SIGKILL)
        run.popen.wait()


def test_ctrl_c_stops_every_process_it_started(command: Command, launch: Launch) -> None:
    run = launch(command, False)
    processes = run.started()
    os.killpg(run.popen.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    assert run.popen.wait(60) == 130, run.log.read_text()[-4000:]
    _assert_all_end(processes, 5)


def test_the_end_of_its_parent_stops_every_process_it_started(
    command: Command, launch: Launch
) -> None:
    run = launch(command, True)
    processes = run.started()
    run.popen.kill()  # dev/run.py's parent: a closed terminal, a killed make
    run.popen.wait()
    # dev/run.py notices within 0.5 s, then stops all as on SIGTERM: each deployable within
    # HERALD_PROVIDER_TIMEOUT + 5 s, honcho's readers after them.
    _assert_all_end(processes, 30)


def test_killing_dev_run_itself_still_ends_every_process_it_started(
    command: Command, launch: Launch, settings: Settings
) -> None:
    run = launch(command, False)
    processes = run.started()
    run.popen.kill()  # SIGKILL: nothing of dev/run.py's own cleanup runs
    run.popen.wait()
    # Its readers die with it, and each deployable gets SIGTERM with its output's reader gone.
    _assert_all_end(processes, settings.provider_timeout + 5 + 2)
