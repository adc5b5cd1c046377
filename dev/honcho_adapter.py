"""honcho where `make run` needs more than its public API. Written for honcho 2.0.0 (pinned).

- How long the Manager waits after its SIGTERM before it SIGKILLs is KILL_WAIT, a module
  global its loop reads: there is no parameter.
- honcho runs each command through `sh -c`, in a session of its own, from a reader process
  it forks (multiprocessing) that ignores SIGINT and SIGTERM. Should the supervisor itself be
  killed (SIGKILL), readers and commands would live on. Here each reader dies with the
  supervisor, and each command, exec'd by its shell, gets SIGTERM when its reader dies
  (PR_SET_PDEATHSIG): a deployable then stops as on any SIGTERM. That takes honcho's private
  Manager._process_ctor (the Process class it makes) and Process._child_ctor (its Popen).

tests/contract/test_honcho_adapter.py checks each against the installed honcho.
"""

from __future__ import annotations

import os
import shlex
import signal
from typing import Any

import honcho.manager
import honcho.process

from herald.core.lifetime import die_with_parent

VERSION = "2.0.0"


def make_manager(kill_wait: float, printer: Any = None) -> Any:
    """A honcho Manager that SIGKILLs kill_wait s after its SIGTERM; its processes end with it."""
    honcho.manager.KILL_WAIT = kill_wait
    manager = honcho.manager.Manager(printer=printer)
    manager._process_ctor = _TiedProcess
    return manager


def add_process(manager: Any, name: str, argv: list[str], env: dict[str, str], cwd: str) -> None:
    """Run argv as name; exec'd by honcho's shell, so that signals reach argv itself."""
    manager.add_process(name, "exec " + shlex.join(argv), env=env, cwd=cwd)


class _TiedProcess(honcho.process.Process):  # type: ignore[misc]  # honcho ships no type hints
    """honcho's Process, whose reader and command end when the supervisor does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._supervisor = os.getpid()
        self._child_ctor = _popen_tied_to_reader

    def run(self, events: Any = None, ignore_signals: bool = False) -> None:
        # In the reader: it ignores SIGTERM and holds nothing worth cleaning up.
        die_with_parent(signal.SIGKILL, self._supervisor)
        super().run(events, ignore_signals)


def _popen_tied_to_reader(cmd: str, **options: Any) -> Any:
    reader = os.getpid()

    def tie() -> None:  # in the command's process, before its shell starts
        die_with_parent(signal.SIGTERM, reader)

    return honcho.process.Popen(cmd, preexec_fn=tie, **options)
