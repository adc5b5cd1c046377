"""One benchmark run's shared state: its config, processes, storage, figures and raw data."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.figures import Figure, Target
from bench.processes import python_module
from bench.storage import Database, Namespace
from bench.system import System
from bench.usage import CpuReport, cpu_meter


@dataclass
class Bench:
    config: BenchConfig
    system: System
    db: Database
    ns: Namespace
    work_dir: Path
    figures: dict[str, Figure] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        """Seconds left of the run's time budget."""
        return self.config.budget_seconds - (time.monotonic() - self.started)

    def figure(
        self,
        key: str,
        name: str,
        unit: str,
        *,
        baseline: str | None = None,
        target: Target | None = None,
        note: str = "",
    ) -> Figure:
        """Register a figure (in report order); its baseline must be registered first."""
        base = self.figures[baseline] if baseline else None
        figure = Figure(key, name, unit, baseline=base, target=target, note=note)
        self.figures[key] = figure
        return figure

    def record(self, phase: str, item: Any) -> None:
        """Keep a raw result (wrk, open-loop, pgbench output...) for the JSON file."""
        self.raw.setdefault(phase, []).append(item)

    @contextmanager
    def metered(self, key: str, *names: str) -> Iterator[CpuReport]:
        """CPU of the named processes (and PostgreSQL, Redis, the load generator) for one run."""
        roots = {name: self.system.pid(name) for name in names if name in self.system.children}
        with cpu_meter(roots) as report:
            yield report
        self.cpu.setdefault(key, []).append(report.as_json())

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until no more rows arrive: requests a load generator left in flight finish."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            count = self.db.count()
            if count == last:
                return
            last = count
            time.sleep(0.5)

    def say(self, line: str) -> None:
        print(f"bench: {line}", flush=True)

    def openloop(self, url: str, rate: float, seconds: float, **options: Any) -> dict[str, Any]:
        """Run the open-loop generator in its own process; its summary."""
        out = self.work_dir / "openloop.json"
        argv = python_module(
            "bench.openloop",
            "--url", url,
            "--rate", f"{rate:.1f}",
            "--seconds", str(seconds),
            "--warmup", str(options.pop("warmup", self.config.warmup_seconds)),
            "--connections", str(options.pop("connections", self.config.openloop_connections)),
            "--out", str(out),
        )  # fmt: skip
        if self.system.headers:
            options["headers_file"] = self.system.headers_file
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench: open-loop generator failed:\n{done.stderr[-3000:]}")
        summary: dict[str, Any] = json.loads(out.read_text())
        return summary
