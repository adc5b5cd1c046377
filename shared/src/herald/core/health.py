"""Health and readiness: what every deployable answers, whatever serves its HTTP.

/healthz says the process is alive and serving, and asks no dependency (a restart would not
bring a database back). /readyz is 200 while every dependency's check passes, else 503 naming
each one that does not, so traffic goes elsewhere until it answers again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
ALIVE: Final = {"status": "ok"}
READY: Final = {"status": "ready"}

# Raises when its dependency cannot be reached.
Check = Callable[[], None]


def unreachable(checks: dict[str, Check]) -> list[str]:
    """The names of the dependencies whose check fails now."""
    failing = []
    for name, check in checks.items():
        try:
            check()
        except Exception:  # any failure of a dependency means "not ready"
            failing.append(name)
    return failing


def readiness(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    """(True, READY) when every check passes, else (False, a JSON error naming those failing)."""
    failing = unreachable(checks)
    if failing:
        return False, {"title": "Not ready", "description": f"unreachable: {', '.join(failing)}"}
    return True, READY
