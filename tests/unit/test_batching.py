import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from herald.core.batching import AsyncBatcher, Batcher, BatchTimeout


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
    calling = threading.Semaphore(0)

    def submit(item: int) -> int:
        # submit() joins the pending list at once, with nothing to wait for before it (the
        # writer is held in handle), so once all ten are calling it all ten are pending.
        calling.release()
        return batcher.submit(item)

    with ThreadPoolExecutor(11) as pool:
        first = pool.submit(batcher.submit, 0)
        while not sizes:
            pass
        rest = [pool.submit(submit, i) for i in range(1, 11)]
        assert all(calling.acquire(timeout=60) for _ in rest), "the submitters never ran"
        release.set()
        assert first.result() == 0
        assert [f.result() for f in rest] == list(range(1, 11))
    assert sizes == [1, 10]


def _echo_noting_sizes() -> tuple[list[int], Callable[[list[int]], list[int]]]:
    """A handler answering each item with itself, and the list of batch sizes it saw."""
    sizes: list[int] = []

    def handle(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    return sizes, handle


def test_a_submission_larger_than_the_batch_limit_is_never_split() -> None:
    sizes, handle = _echo_noting_sizes()
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


def test_a_caller_behind_a_hung_batch_stops_waiting_and_is_never_run() -> None:
    release = threading.Event()
    handled: list[int] = []

    def handle(items: list[int]) -> list[int]:
        handled.extend(items)
        release.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(handle, 10, "hung", wait_seconds=0.05)
    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(batcher.submit, 1)
        while not handled:
            pass
        with pytest.raises(BatchTimeout):
            batcher.submit(2)
        release.set()
        assert hung.result() == 1
    assert batcher.submit(3) == 3
    assert handled == [1, 3]


def test_a_caller_whose_batch_was_taken_waits_for_its_outcome_past_the_timeout() -> None:
    def handle(items: list[int]) -> list[int]:
        time.sleep(0.3)  # a commit slower than the wait: the caller must not give up on it
        return items

    batcher: Batcher[int, int] = Batcher(handle, 10, "slow", wait_seconds=0.05)
    assert batcher.submit(1) == 1


def test_a_caller_of_an_effect_free_batcher_stops_waiting_even_on_a_taken_batch() -> None:
    release = threading.Event()

    def handle(items: list[int]) -> list[int]:
        release.wait(5)  # a read: giving up on it changes nothing
        return items

    batcher: Batcher[int, int] = Batcher(handle, 10, "read", wait_seconds=0.05, effect_free=True)
    with pytest.raises(BatchTimeout):
        batcher.submit(1)
    release.set()


def _on_loop(
    handle: Callable[[list[int]], list[int]],
) -> Callable[[list[int]], Awaitable[list[int]]]:
    async def run(items: list[int]) -> list[int]:
        await asyncio.sleep(0)  # a real handler awaits its statement
        return handle(items)

    return run


def test_async_callers_each_get_their_own_result() -> None:
    batcher: AsyncBatcher[int, int] = AsyncBatcher(
        _on_loop(lambda items: [i * 2 for i in items]), 50, "x2"
    )

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(200)))

    assert asyncio.run(main()) == [i * 2 for i in range(200)]


def test_async_submissions_arriving_together_share_batches_up_to_the_limit() -> None:
    sizes, handle = _echo_noting_sizes()
    batcher: AsyncBatcher[int, int] = AsyncBatcher(_on_loop(handle), 40, "sizes")

    async def main() -> None:
        await asyncio.gather(*(batcher.submit(i) for i in range(100)))

    asyncio.run(main())
    assert sizes == [40, 40, 20]


def test_an_async_batch_failure_is_every_callers_failure_and_the_next_batch_runs() -> None:
    def handle(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("database down")
        return items

    batcher: AsyncBatcher[int, int] = AsyncBatcher(_on_loop(handle), 10, "down")

    async def main() -> tuple[list[int | BaseException], int]:
        failed = await asyncio.gather(
            *(batcher.submit(i) for i in (12, 13)), return_exceptions=True
        )
        return failed, await batcher.submit(14)

    failed, after = asyncio.run(main())
    assert all(isinstance(outcome, RuntimeError) for outcome in failed)
    assert after == 14


def test_a_cancelled_async_caller_does_not_stop_the_others() -> None:
    async def main() -> int:
        release = asyncio.Event()

        async def handle(items: list[int]) -> list[int]:
            await release.wait()
            return items

        batcher: AsyncBatcher[int, int] = AsyncBatcher(handle, 10, "cancel")
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.05)
        gone.cancel()
        release.set()
        return await kept

    assert asyncio.run(main()) == 2


def test_an_async_caller_cancelled_before_its_batch_is_taken_is_never_run() -> None:
    async def main() -> list[int]:
        release, running = asyncio.Event(), asyncio.Event()
        handled: list[int] = []

        async def handle(items: list[int]) -> list[int]:
            handled.extend(items)
            running.set()
            await release.wait()
            return items

        batcher: AsyncBatcher[int, int] = AsyncBatcher(handle, 10, "withdraw")
        first = asyncio.create_task(batcher.submit(1))
        await running.wait()  # the runner holds the first batch: the next one waits
        gone = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0)  # gone is pending now
        gone.cancel()
        release.set()
        assert await first == 1
        assert await batcher.submit(3) == 3
        return handled

    assert asyncio.run(main()) == [1, 3]
