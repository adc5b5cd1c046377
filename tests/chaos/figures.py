"""A chaos test's measurements, reported where a `make test` run shows them."""

from __future__ import annotations

import warnings
from collections.abc import Callable

# figures(name=value, ...): what a test hands its measurements to (the `figures` fixture).
Figures = Callable[..., None]


class ChaosFigures(UserWarning):
    """Carries a chaos test's figures to pytest's warnings summary.

    A warning is the one channel from a test to the terminal of a plain `make test` run (under
    xdist, without -s): the figures belong in every CI log, not only in failure reports. It
    lives in a plain module because xdist's controller imports a warning's class by name.
    """


def report(test: str, values: dict[str, object], record: Callable[[str, object], None]) -> None:
    """Print the figures (seen with -s), record them (JUnit XML) and warn them (summary)."""
    line = ", ".join(f"{name}={value}" for name, value in values.items())
    print(f"\nchaos figures {test}: {line}")
    for name, value in values.items():
        record(name, value)
    # "always", whatever -W or filterwarnings say: figures are news, not a failure.
    with warnings.catch_warnings():
        warnings.simplefilter("always", ChaosFigures)
        warnings.warn(ChaosFigures(line), stacklevel=3)
