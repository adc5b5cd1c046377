import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from herald.core.batching import Batcher, BatchTimeout


def test_each_caller_gets_its_own_result() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: [i * 2 for i in items], 100, "double")
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(batcher.submit, range(200))) == [i * 2 for i in range(200)]


def test_items_arriving_during_a_batch_share_the_next_one() -> None:
    release = threading.Event()
    sizes: list[int] = []

    def handle(items: list[int]) -> list[int]:
        sizes.append(len(items))
        release.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(handle, 100, "slow")
    with ThreadPoolExecutor(11) as pool:
        first = pool.submit(batcher.submit, 0)
        while not sizes:
            pass
        rest = [pool.submit(batcher.submit, i) for i in range(1, 11)]
        while sum(len(batcher._pending[i]) for i in range(len(batcher._pending))) < 10:
            pass
        release.set()
        assert first.result() == 0
        assert [f.result() for f in rest] == list(range(1, 11))
    assert sizes == [1, 10]


def test_a_submission_larger_than_the_batch_limit_is_never_split() -> None:
    sizes: list[int] = []

    def handle(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(handle, 10, "n")
    assert batcher.submit_all(list(range(25))) == list(range(25))
    assert sizes == [25]


def test_a_failed_batch_fails_every_caller_in_it() -> None:
    def handle(items: list[int]) -> list[int]:
        raise ConnectionError("database down")

    batcher: Batcher[int, int] = Batcher(handle, 10, "down")
    with pytest.raises(ConnectionError):
        batcher.submit(1)
    with pytest.raises(ConnectionError):
        batcher.submit_all([1, 2])


def test_a_caller_stops_waiting_on_a_hung_batch() -> None:
    release = threading.Event()

    def handle(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(handle, 10, "hung", wait_seconds=0.05)
    with pytest.raises(BatchTimeout):
        batcher.submit(1)
    release.set()
