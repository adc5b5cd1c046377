"""What dev/honcho_adapter.py relies on in honcho still holds (small processes, a few seconds)."""

from __future__ import annotations

import io
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import honcho.printer
import pytest

# dev/ is scripts, not a package: at run time import its module from the directory itself;
# mypy, which checks from the repository root, knows the same file as `dev.honcho_adapter`.
if TYPE_CHECKING:
    from dev import honcho_adapter as adapter
else:
    sys.path.insert(0, str(Path(__file__).parents[2] / "dev"))
    import honcho_adapter as adapter

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _signal_handlers_kept() -> Iterator[None]:
    """Manager.loop handles SIGINT and SIGTERM of the process it runs in: give them back."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


def _run(processes: dict[str, list[str]], kill_wait: float) -> str:
    """Run processes under the adapter's manager until it returns; what it printed."""
    output = io.StringIO()
    manager = adapter.make_manager(kill_wait, honcho.printer.Printer(output))
    for name, argv in processes.items():
        adapter.add_process(manager, name, argv, env={}, cwd="/")
    manager.loop()
    return output.getvalue()


def test_the_installed_honcho_is_the_version_the_adapter_was_written_for() -> None:
    assert version("honcho") == adapter.VERSION


def test_the_manager_sigkills_kill_wait_seconds_after_its_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = textwrap.dedent(f"""
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
    """)
    brief = f"while [ ! -e {ready} ]; do sleep 0.02; done"  # ends once stubborn ignores TERM
    _run({"stubborn": [sys.executable, "-c", stubborn], "brief": ["sh", "-c", brief]}, 0.5)
    # honcho's own default (5 s) would keep it that long past brief's end.
    assert time.time() - ready.stat().st_mtime < 3


def test_a_command_is_execd_and_gets_sigterm_when_its_reader_dies() -> None:
    report = textwrap.dedent("""
        import ctypes, os
        sig = ctypes.c_int()
        ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG
        parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\\0")[0]
        print("pdeathsig", sig.value, "parent", parent.decode(), flush=True)
    """)
    printed = _run({"report": [sys.executable, "-c", report]}, 5)
    line = next(line for line in printed.splitlines() if "pdeathsig" in line)
    assert f"pdeathsig {int(signal.SIGTERM)}" in line
    # Its parent is honcho's reader (a fork of this interpreter), not a shell left in between.
    assert not line.rsplit(" ", 1)[-1].endswith("sh"), line


def test_make_manager_gives_its_processes_the_tied_class(tmp_path: Path) -> None:
    manager: Any = adapter.make_manager(5, honcho.printer.Printer(io.StringIO()))
    process = manager.add_process("p", "exec true")
    assert type(process).__name__ == "_TiedProcess"
    assert process._child_ctor is not None
