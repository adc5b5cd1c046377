"""Group commit: many threads' small writes become one statement and one COMMIT.

Each request thread hands its work to a Batcher and waits. One background thread takes
everything that arrived while it was busy with the previous batch and runs it in one go. An idle
system adds no delay (the first item is taken at once); under load, round trips and commits are
shared by a whole batch. Every caller gets its own result, or the batch's exception.

A caller gives up only while its submission still waits to be taken: it is then withdrawn, so it
is never run. Once taken, the caller waits for the batch's outcome, however long: a write in it
may commit, and a caller told "timed out, nothing was stored" must never see its row go out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchTimeout(Exception):
    """No outcome in time. Unless the Batcher is effect_free, nothing ran and nothing will."""


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
        return self._results_or_error()

    def wait_until_set(self) -> list[Result]:
        """The results, however long the batch takes (its handler must end by itself)."""
        self._ready.acquire()
        return self._results_or_error()

    def _results_or_error(self) -> list[Result]:
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
        effect_free: bool = False,
    ) -> None:
        # wait_seconds bounds the wait for a batch to take a submission, not for its outcome;
        # only where handle has no effect (reads) may a caller also give up on a taken batch.
        self._handle = handle
        self._wait_seconds = wait_seconds
        self._effect_free = effect_free
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
        """Run items together, in order, in one batch (however large); their results.

        BatchTimeout if no batch took them within wait_seconds: then they are never run
        (effect_free: also if their batch has not finished by then).
        """
        submission: tuple[Sequence[Item], _Outcome[Result]] = (items, _Outcome())
        with self._wake:
            if self._thread is None:
                # Started on first use, so it belongs to the process that serves (after a fork).
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._pending.append(submission)
            self._wake.notify()
        results = submission[1].wait(self._wait_seconds)
        if results is None:
            self._withdraw(submission)
            if self._effect_free:  # a read given up on changes nothing: keep the answer prompt
                raise BatchTimeout(f"{self._name}: no outcome within {self._wait_seconds} s")
            # Taken before we could withdraw it: its batch may commit, so its outcome is the
            # only true answer. The handler ends by itself (statements have their own timeout).
            results = submission[1].wait_until_set()
        return results

    def _withdraw(self, submission: tuple[Sequence[Item], _Outcome[Result]]) -> None:
        """Remove a submission no batch has taken yet (BatchTimeout); if taken, do nothing."""
        # Under the lock _take pops with: a submission is either withdrawn or taken, never both.
        with self._wake:
            for index, waiting in enumerate(self._pending):
                if waiting is submission:
                    del self._pending[index]
                    raise BatchTimeout(f"{self._name}: not taken within {self._wait_seconds} s")

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
            except BaseException as error:  # the batch's failure is every caller's failure
                # Even when this thread is being stopped: its callers wait without a timeout.
                for _, outcome in batch:
                    outcome.set([], error)
                if not isinstance(error, Exception):
                    raise
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
