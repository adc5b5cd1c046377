"""Group commit: many threads' small writes become one statement and one COMMIT.

Each request thread hands its work to a Batcher and waits. One background thread takes
everything that arrived while it was busy with the previous batch and runs it in one go. An idle
system adds no delay (the first item is taken at once); under load, round trips and commits are
shared by a whole batch. Every caller gets its own result, or the batch's exception.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchTimeout(Exception):
    """The batch holding this item did not finish in time (its outcome is unknown)."""


class _Outcome(Generic[Result]):
    """One submission's results (or the batch's error), set once by the batch thread.

    Lighter than a Future per item: one lock, held until the results are in, and no Condition
    (under gevent both sides are greenlets, and this is most of what a request waits through).
    """

    __slots__ = ("_error", "_ready", "_results")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()
        self._results: list[Result] = []
        self._error: BaseException | None = None

    def set(self, results: list[Result], error: BaseException | None) -> None:
        self._results, self._error = results, error
        self._ready.release()

    def wait(self, timeout: float) -> list[Result] | None:
        """The results; None if they did not come within timeout seconds."""
        if not self._ready.acquire(timeout=timeout):
            return None
        if self._error is not None:
            raise self._error
        return self._results


class Batcher(Generic[Item, Result]):
    """Runs handle(items) -> results (one per item, same order) on batches of submitted items."""

    def __init__(
        self,
        handle: Callable[[list[Item]], Sequence[Result]],
        max_batch: int,
        name: str,
        wait_seconds: float = 30.0,
    ) -> None:
        self._handle = handle
        self._wait_seconds = wait_seconds
        self._max_batch = max_batch
        self._name = name
        # Whole submissions, in arrival order: one submission is never split across batches.
        self._pending: list[tuple[Sequence[Item], _Outcome[Result]]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, item: Item) -> Result:
        """Run item in the next batch and return its result (or raise the batch's error)."""
        return self.submit_all((item,))[0]

    def submit_all(self, items: Sequence[Item]) -> list[Result]:
        """Run items together, in order, in one batch (however large); their results."""
        outcome: _Outcome[Result] = _Outcome()
        with self._wake:
            if self._thread is None:
                # Started on first use, so it belongs to the process that serves (after a fork).
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._pending.append((items, outcome))
            self._wake.notify()
        results = outcome.wait(self._wait_seconds)
        if results is None:
            raise BatchTimeout(f"{self._name}: no outcome within {self._wait_seconds} s")
        return results

    def _take(self) -> list[tuple[Sequence[Item], _Outcome[Result]]]:
        with self._wake:
            while not self._pending:
                self._wake.wait()
            taken = [self._pending.pop(0)]
            size = len(taken[0][0])
            while self._pending and size + len(self._pending[0][0]) <= self._max_batch:
                size += len(self._pending[0][0])
                taken.append(self._pending.pop(0))
            return taken

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                results = self._handle([item for items, _ in batch for item in items])
            except Exception as error:  # the batch's failure is every caller's failure
                for _, outcome in batch:
                    outcome.set([], error)
                continue
            start = 0
            for items, outcome in batch:
                outcome.set(list(results[start : start + len(items)]), None)
                start += len(items)


class AsyncBatcher(Generic[Item, Result]):
    """Batcher for coroutines on one event loop: the same group commit, no thread per caller.

    Callers await submit(); one task takes everything that arrived while the previous batch
    ran and awaits handle(items) -> results (a statement on an async connection), so the loop
    keeps serving while a batch commits.
    """

    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        max_batch: int,
        name: str,
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._name = name
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Run item in the next batch and return its result (or raise the batch's error)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._wake is None or self._task is None:
            # Made on first use, so they belong to the loop that runs the batches.
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._wake), name=self._name)
        self._wake.set()
        return await future

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._handle([item for item, _ in batch])
                except Exception as error:  # the batch's failure is every caller's failure
                    for _, future in batch:
                        if not future.done():  # done: its caller was cancelled (a stopping worker)
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
