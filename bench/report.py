"""The run's results: JSON with every raw figure, a Markdown table and a PNG chart."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.context import Bench
from bench.figures import Figure

MIB = 1024 * 1024


def _clean(value: Any) -> Any:
    """Strict JSON: an infinite latency (an unanswered request) becomes null."""
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞ (unanswered)"
    if unit in ("ms", "MiB") or abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def _met(figure: Figure) -> str:
    return {True: "yes", False: "**no**", None: "—"}[figure.met]


def markdown_table(bench: Bench) -> str:
    lines = [
        "| figure | key | value (median) | runs | baseline (median) | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for figure in bench.figures.values():
        runs = ", ".join(_number(run, figure.unit) for run in figure.runs)
        base = figure.baseline
        base_text = f"{_number(base.value, base.unit)} {base.unit} ({base.key})" if base else "—"
        ratio = "—" if figure.ratio is None else f"{figure.ratio:.2f}"
        target = figure.target.describe() if figure.target else "—"
        lines.append(
            f"| {figure.name} | {figure.key} | {_number(figure.value, figure.unit)} {figure.unit} "
            f"| {runs} "
            f"| {base_text} | {ratio} | {target} | {_met(figure)} |"
        )
    return "\n".join(lines)


# Not Herald's cost: the load, the provider, the harness and the kernel's loopback work.
NOT_HERALD = {"load generator", "bench itself", "kernel irq/softirq", "messageapp", "recorder"}


def _run_rate(bench: Bench, key: str, item: dict[str, Any]) -> float | None:
    if "client" in item:  # an end-to-end run
        return float(item["client"]["achieved_rate"])
    if "achieved_rate" in item:  # an open-loop run
        return float(item["achieved_rate"])
    if "rate" in item:
        scale = bench.config.batch_size if key == "batch_rate" else 1
        return float(item["rate"]) * scale
    return None


def cpu_per_operation(bench: Bench, key: str) -> tuple[float, float] | None:
    """(median operations/s, median ms of CPU per operation by the subject and its servers)."""
    reports, items = bench.cpu.get(key, []), bench.raw.get(key, [])
    pairs = []
    for report, item in zip(reports, items, strict=False):
        rate = _run_rate(bench, key, item) if isinstance(item, dict) else None
        if rate:
            used = sum(v for k, v in report["percent_of_one_core"].items() if k not in NOT_HERALD)
            pairs.append((rate, 10 * used / rate))  # % of a core / (op/s) * 10 = ms per op
    if not pairs:
        return None
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def cpu_table(bench: Bench, cores: int) -> str:
    """Median CPU per process group for each measured figure, in % of one core."""
    groups: list[str] = []
    for reports in bench.cpu.values():
        for report in reports:
            for name in report["percent_of_one_core"]:
                if name not in groups:
                    groups.append(name)
    header = [
        "figure",
        *groups,
        "other processes",
        f"machine busy (of {cores * 100} %)",
        "op/s",
        "CPU ms per op (subject + PostgreSQL + Redis)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for key, reports in bench.cpu.items():
        cells = [key]
        for name in groups:
            values = [r["percent_of_one_core"].get(name, 0.0) for r in reports]
            cells.append(f"{statistics.median(values):.0f}")
        busy = statistics.median(r["machine_busy_percent_of_all_cores"] for r in reports) * cores
        ours = statistics.median(sum(r["percent_of_one_core"].values()) for r in reports)
        cells += [f"{max(0.0, busy - ours):.0f}", f"{busy:.0f}"]
        per_op = cpu_per_operation(bench, key)
        cells += [f"{per_op[0]:,.0f}", f"{per_op[1]:.3f}"] if per_op else ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Other processes' CPU (not Herald's, the servers' or the load generator's) above this share of
# one core means the machine was shared during the measurement: its figure is pessimistic.
NOISE_PERCENT = 25.0


def contamination(bench: Bench, cores: int) -> str:
    """A warning naming the measurements during which other processes took the CPU."""
    noisy = []
    for key, reports in bench.cpu.items():
        busy = statistics.median(r["machine_busy_percent_of_all_cores"] for r in reports) * cores
        ours = statistics.median(sum(r["percent_of_one_core"].values()) for r in reports)
        if busy - ours > NOISE_PERCENT:
            names = {n for r in reports for n in r.get("busiest_other_processes", {})}
            top = sorted(
                ((statistics.median(r.get("busiest_other_processes", {}).get(n, 0.0)
                  for r in reports), n) for n in names),
                reverse=True,
            )[:3]  # fmt: skip
            who = ", ".join(f"{name} {percent:.0f} %" for percent, name in top)
            noisy.append(f"{key} ({busy - ours:.0f} %: {who})")
    if not noisy:
        return "No measurement shared the machine with other busy processes."
    return (
        "WARNING: other processes on this machine used more than "
        f"{NOISE_PERCENT:.0f} % of a core during: {', '.join(noisy)}. "
        "Those figures understate Herald; run again on a quiet machine to compare."
    )


def write_json(bench: Bench, path: Path, meta: dict[str, Any]) -> None:
    document = {
        "meta": meta,
        "config": vars(bench.config) | {"only": list(bench.config.only)},
        "figures": {key: figure.as_json() for key, figure in bench.figures.items()},
        "cpu": bench.cpu,
        "raw": bench.raw,
    }
    path.write_text(json.dumps(_clean(document), indent=1, default=str))


def _bars(
    ax: Any, figures: list[Figure], title: str, ylabel: str, ratio: bool, log_scale: bool = False
) -> None:
    labels, heights, colors = [], [], []
    for index, figure in enumerate(figures):
        value = figure.ratio if ratio else figure.value
        scale = (figure.baseline.value or 1.0) if ratio and figure.baseline else 1.0
        runs = [run / scale for run in figure.runs if not math.isinf(run)]
        finite = value if value is not None and not math.isinf(value) else 0.0
        labels.append(figure.key)
        heights.append(finite)
        colors.append({True: "tab:green", False: "tab:red", None: "tab:gray"}[figure.met])
        ax.scatter([index] * len(runs), runs, color="black", s=12, zorder=3)
        ax.annotate(f"{finite:,.2f}" if finite < 100 else f"{finite:,.0f}", (index, finite),
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
        target = figure.target
        if target is not None and target.on_ratio == ratio:
            ax.hlines(target.bound, index - 0.4, index + 0.4, colors="tab:blue", linestyles="--")
    ax.bar(range(len(figures)), heights, color=colors, alpha=0.6)
    ax.set_xticks(range(len(figures)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")


def write_chart(bench: Bench, path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = bench.figures

    def pick(*keys: str) -> list[Figure]:
        return [figs[key] for key in keys if key in figs]

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _bars(axes[0][0], pick("post_rate", "status_rate"),
          "Speed ÷ hello-world (same run); dashed = target", "ratio", ratio=True)  # fmt: skip
    _bars(axes[0][1], pick("batch_rate", "sender_0ms", "sender_50ms"),
          "Messages per second; dashed = target", "messages/s", ratio=False)  # fmt: skip
    _bars(axes[1][0], pick("post_p99", "e2e_p50", "e2e_p99", "status_p99_small",
                           "status_p99_large"),
          "Latency (open loop, log scale); dashed = target", "ms", ratio=False,
          log_scale=True)  # fmt: skip
    _rss(axes[1][1], bench)
    fig.suptitle(f"Herald benchmark — {subtitle}\ngreen: target met, red: missed, dots: runs",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rss(ax: Any, bench: Bench) -> None:
    runs = bench.raw.get("sender_rss")
    ax.set_title("Sender memory (all its processes) over the RSS run", fontsize=10)
    if not runs:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
        return
    run = runs[-1]
    times = [s[0] for s in run["samples"]]
    ax.plot(times, [s[1] / MIB for s in run["samples"]], color="tab:purple", label="RSS (MiB)")
    ax.set_xlabel("seconds since the sender started")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    sent = ax.twinx()
    sent.plot([p[0] for p in run["progress"]], [p[1] for p in run["progress"]],
              color="tab:orange", label="messages received by provider")  # fmt: skip
    sent.set_ylabel("messages")
    ax.legend(loc="lower left", fontsize=8)
    sent.legend(loc="lower right", fontsize=8)
