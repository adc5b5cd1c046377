"""How the stand-in misbehaves: latency and failures, from settings and changed at runtime."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herald.core.settings import Settings

# The provider contract's transient failure when nothing else is configured.
DEFAULT_FAIL_STATUS = 503


class InvalidKnobs(ValueError):
    """A PUT /config body that names an unknown knob or gives one a bad value."""


@dataclass(frozen=True)
class Knobs:
    """Test-controlled behaviour; fail_status and retry_after apply to every simulated failure."""

    latency_ms: float = 0.0
    failure_rate: float = 0.0
    fail_status: int = DEFAULT_FAIL_STATUS
    fail_next: int = 0
    retry_after: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The knobs as GET /config shows them."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Plan:
    """What to do with one well-formed call: wait delay_s, then fail with fail_status or accept."""

    delay_s: float
    fail_status: int | None = None
    retry_after: str | None = None


def _number(name: str, value: object, low: float, high: float) -> float:
    # bool is an int subclass, but true/false is never a sensible latency or rate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidKnobs(f"{name} must be a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidKnobs(f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidKnobs(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidKnobs(f"{name} must be between {low} and {high}")
    return value


def _header_value(name: str, value: object) -> str | None:
    if value is None:
        return None
    # It goes out verbatim as a header: printable ASCII only, so it cannot split the response.
    if not isinstance(value, str) or not value or not all(" " <= c <= "~" for c in value):
        raise InvalidKnobs(f"{name} must be null or a non-empty printable ASCII string")
    return value


_VALIDATORS: dict[str, Callable[[str, object], object]] = {
    "latency_ms": lambda name, value: _number(name, value, 0, math.inf),
    "failure_rate": lambda name, value: _number(name, value, 0, 1),
    # Only error statuses: a "failure" that answers 2xx would be counted as sent by the sender.
    "fail_status": lambda name, value: _integer(name, value, 400, 599),
    "fail_next": lambda name, value: _integer(name, value, 0, 2**31),
    "retry_after": _header_value,
}


def patched(knobs: Knobs, patch: object) -> Knobs:
    """knobs with patch's fields changed; InvalidKnobs (and nothing changed) on any bad field."""
    if not isinstance(patch, dict):
        raise InvalidKnobs("the body must be a JSON object")
    unknown = sorted(set(patch) - set(_VALIDATORS))
    if unknown:
        raise InvalidKnobs(f"unknown fields: {', '.join(unknown)}")
    changes: dict[str, Any] = {key: _VALIDATORS[key](key, value) for key, value in patch.items()}
    return dataclasses.replace(knobs, **changes)


class Behaviour:
    """The current knobs, and the decision for each call that reaches the provider's logic."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self._initial = Knobs(
            latency_ms=settings.messageapp_latency_ms,
            failure_rate=settings.messageapp_failure_rate,
        )
        self.knobs = self._initial
        self._rng = rng or random.Random()

    def configure(self, patch: object) -> Knobs:
        """Apply a PUT /config body; all or nothing."""
        self.knobs = patched(self.knobs, patch)
        return self.knobs

    def reset(self) -> None:
        """Back to the knobs the process started with."""
        self.knobs = self._initial

    def plan(self) -> Plan:
        """Decide one call's fate on arrival, so fail_next counts calls in arrival order."""
        knobs = self.knobs
        if knobs.fail_next > 0:
            self.knobs = dataclasses.replace(knobs, fail_next=knobs.fail_next - 1)
            fail = True
        else:
            # random() < 1.0 always and < 0.0 never: rates 1 and 0 are exact.
            fail = self._rng.random() < knobs.failure_rate
        delay_s = knobs.latency_ms / 1000
        if not fail:
            return Plan(delay_s)
        return Plan(delay_s, fail_status=knobs.fail_status, retry_after=knobs.retry_after)
