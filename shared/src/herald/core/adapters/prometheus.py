"""prometheus-client where Herald needs more than its public API. Written for 0.26.0 (pinned).

prometheus-client chooses how metrics store their values once, at import:
values.ValueClass, read by every metric as it is made, is files in PROMETHEUS_MULTIPROC_DIR
(multiprocess mode) if that variable was set by then, else memory. Herald's deployables make
their directory after importing it (a temporary one per start), and there is no public way
to choose again, so the module global is set again; tests/contract/test_prometheus_adapter.py
checks that metrics made afterwards write there.
"""

from __future__ import annotations

from prometheus_client import values

VERSION = "0.26.0"


def choose_value_storage() -> None:
    """Metrics made from now on store their values as PROMETHEUS_MULTIPROC_DIR says now."""
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
