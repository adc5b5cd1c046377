"""Where the CPU goes during a run, and how a process tree's memory moves over time."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

# Shared servers: every process of that name counts (other users of the machine included).
SHARED_SERVERS = {"postgres": ("postgres",), "redis": ("redis-server",)}


def _tree(root: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _named(names: tuple[str, ...]) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]


def _cpu_seconds(processes: list[psutil.Process]) -> dict[tuple[int, float], float]:
    out = {}
    for process in processes:
        with suppress(psutil.Error):
            times = process.cpu_times()
            out[(process.pid, process.create_time())] = times.user + times.system
    return out


def _children_seconds() -> float:
    # Reaped children's CPU: the load generator (wrk, open-loop) exits and is waited for
    # inside the run; Herald's processes are not reaped until they stop.
    times = os.times()
    return times.children_user + times.children_system


def _busy_interrupts_total() -> tuple[float, float, float]:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    # Loopback TCP is processed in softirq context, charged to no process in particular.
    interrupts = getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    total = sum(times)
    # guest time is already counted in user on Linux.
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return total - idle, interrupts, total


@dataclass
class CpuReport:
    """CPU used per group during a run, in % of one core (the machine has nproc * 100 %)."""

    seconds: float
    percent: dict[str, float] = field(default_factory=dict)
    machine_busy_percent: float = 0.0
    others: dict[str, float] = field(default_factory=dict)  # busiest other processes, by name

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "percent_of_one_core": {k: round(v, 1) for k, v in self.percent.items()},
            "machine_busy_percent_of_all_cores": round(self.machine_busy_percent, 1),
            "busiest_other_processes": {k: round(v, 1) for k, v in self.others.items()},
        }


def _label(process: psutil.Process) -> str:
    with suppress(psutil.Error):
        argv = process.cmdline()
        if len(argv) > 1 and Path(argv[0]).name.startswith("python"):
            return f"python {Path(argv[1]).name}"
        if argv:
            return Path(argv[0]).name
    return str(process.info.get("name", "?"))


def _everyone() -> dict[tuple[int, float], tuple[str, float]]:
    out = {}
    for process in psutil.process_iter(["name"]):
        with suppress(psutil.Error):
            times = process.cpu_times()
            out[(process.pid, process.create_time())] = (_label(process), times.user + times.system)
    return out


def _busiest_others(
    before: dict[tuple[int, float], tuple[str, float]],
    after: dict[tuple[int, float], tuple[str, float]],
    ours: set[tuple[int, float]],
    seconds: float,
) -> dict[str, float]:
    by_name: dict[str, float] = {}
    for key, (name, cpu) in after.items():
        if key in ours or key[0] == os.getpid():
            continue
        used = cpu - before.get(key, (name, 0.0))[1]
        by_name[name] = by_name.get(name, 0.0) + 100 * used / seconds
    busiest = sorted(by_name.items(), key=lambda item: -item[1])[:5]
    return {name: percent for name, percent in busiest if percent >= 1.0}


@contextmanager
def cpu_meter(roots: Mapping[str, int]) -> Iterator[CpuReport]:
    """Measure the CPU of each named process tree, the shared servers and the load generator."""

    def snapshot() -> dict[str, dict[tuple[int, float], float]]:
        groups = {name: _cpu_seconds(_tree(pid)) for name, pid in roots.items()}
        for name, names in SHARED_SERVERS.items():
            groups[name] = _cpu_seconds(_named(names))
        return groups

    report = CpuReport(0.0)
    everyone = _everyone()
    before, children = snapshot(), _children_seconds()
    busy0, interrupts0, total0 = _busy_interrupts_total()
    me = psutil.Process()
    mine0 = me.cpu_times()
    started = time.monotonic()
    yield report
    after = snapshot()
    report.seconds = time.monotonic() - started
    for name, now in after.items():
        used = sum(seconds - before[name].get(key, 0.0) for key, seconds in now.items())
        report.percent[name] = 100 * used / report.seconds
    report.percent["load generator"] = 100 * (_children_seconds() - children) / report.seconds
    mine1 = me.cpu_times()
    mine = mine1.user + mine1.system - mine0.user - mine0.system
    report.percent["bench itself"] = 100 * mine / report.seconds
    busy1, interrupts1, total1 = _busy_interrupts_total()
    cores = psutil.cpu_count() or 1
    report.percent["kernel irq/softirq"] = (
        100 * cores * (interrupts1 - interrupts0) / max(total1 - total0, 1e-9)
    )
    ours = {key for group in after.values() for key in group}
    report.others = _busiest_others(everyone, _everyone(), ours, report.seconds)
    report.machine_busy_percent = 100 * (busy1 - busy0) / max(total1 - total0, 1e-9)


class RssSampler:
    """Samples a process tree's resident memory in a background thread."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.samples: list[tuple[float, int, int]] = []  # (seconds, tree total, largest process)
        self._t0 = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            sizes = []
            for process in _tree(self._root):
                with suppress(psutil.Error):
                    sizes.append(process.memory_info().rss)
            if sizes:
                self.samples.append((time.monotonic() - self._t0, sum(sizes), max(sizes)))
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
