"""What a figure is: repeated runs, their median, its same-run baseline, and its target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """A bound on the figure's value, or on its ratio to the baseline when `on_ratio`."""

    op: str  # ">=" or "<="
    bound: float
    on_ratio: bool = False
    text: str = ""

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def describe(self) -> str:
        if self.text:
            return self.text
        what = "ratio" if self.on_ratio else ""
        return f"{what} {self.op.replace('>=', '≥').replace('<=', '≤')} {self.bound:g}".strip()


@dataclass
class Figure:
    """One reported measure; `runs` holds each repeat's value (None: the run produced nothing)."""

    key: str
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    baseline: Figure | None = None
    target: Target | None = None
    note: str = ""
    value_override: float | None = None  # figures derived from others (e.g. a p99 ratio)

    @property
    def value(self) -> float | None:
        if self.value_override is not None:
            return self.value_override
        return statistics.median(self.runs) if self.runs else None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.value is None or not self.baseline.value:
            return None
        return self.value / self.baseline.value

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.ratio if self.target.on_ratio else self.value)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.value,
            "runs": self.runs,
            "baseline": self.baseline.key if self.baseline else None,
            "baseline_median": self.baseline.value if self.baseline else None,
            "ratio": self.ratio,
            "target": self.target.describe() if self.target else None,
            "met": self.met,
            "note": self.note,
        }
