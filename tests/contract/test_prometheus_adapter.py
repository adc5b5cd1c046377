"""What herald.core.adapters.prometheus relies on in prometheus-client still holds (fast)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import Counter, values

from herald.core.adapters import prometheus as adapter


def test_the_installed_prometheus_client_is_the_version_the_adapter_was_written_for() -> None:
    assert version("prometheus-client") == adapter.VERSION


@pytest.fixture
def restored_storage() -> Iterator[None]:
    """Whatever storage this test chooses, the tests after it get the one they had."""
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    yield
    if before is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = before
    adapter.choose_value_storage()


@pytest.mark.usefixtures("restored_storage")
def test_metrics_made_after_choosing_again_write_to_the_directory_named_then(
    tmp_path: Path,
) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    adapter.choose_value_storage()
    Counter("herald_contract_total", "A counter of the contract test.", registry=None).inc()
    assert [path.name for path in tmp_path.iterdir()] == [f"counter_{os.getpid()}.db"]


@pytest.mark.usefixtures("restored_storage")
def test_without_a_directory_metrics_made_after_choosing_again_stay_in_memory() -> None:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    adapter.choose_value_storage()
    counter = Counter("herald_contract_memory_total", "A counter in memory.", registry=None)
    assert isinstance(counter._value, values.MutexValue)
