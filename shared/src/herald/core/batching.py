"""Group commit: many callers' small writes become one statement and one COMMIT.

Each caller hands its work to a batcher and waits. One background runner takes everything that
arrived while it was busy with the previous batch and runs it in one go. An idle system adds no
delay (the first item is taken at once); under load, round trips and commits are shared by a
whole batch. Every caller gets its own result, or the batch's exception.

A caller gives up only while its submission still waits to be taken: it is then withdrawn, so it
is never run. Once taken, the caller waits for the batch's outcome, however long: a write in it
may commit, and a caller told "timed out, nothing was stored" must never see its row go out.

The rules (arrival order, batch size, whole submissions, each caller's share of the results,
the batch's error for all, withdraw-before-taken) are written once, in _GroupCommit. Batcher
(threads or greenlets: ingest, status reads) and AsyncBatcher (coroutines on one event loop: the
sender) differ only in how a caller and the runner wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# How a caller waits for its submission's results: a lock (threads) or a future (coroutines).
Waiter = TypeVar("Waiter")


class BatchTimeout(Exception):
    """No outcome in time. Unless the Batcher is effect_free, nothing ran and nothing will."""


class _GroupCommit(Generic[Item, Result, Waiter]):
    """What every batcher does without waiting; its driver holds whatever lock it needs."""

    def __init__(self, max_batch: int, name: str) -> None:
        self._max_batch = max_batch
        self._name = name
        # Whole submissions, in arrival order: one submission is never split across batches.
        self._pending: deque[tuple[Sequence[Item], Waiter]] = deque()

    def _set(self, waiter: Waiter, results: list[Result], error: BaseException | None) -> None:
        """Hand one submission's results (or the batch's error) to its caller; once."""
        raise NotImplementedError

    def _withdraw(self, waiter: Waiter) -> bool:
        """Remove a submission no batch has taken yet; False if one has (it runs, or ran)."""
        for index, (_, waiting) in enumerate(self._pending):
            if waiting is waiter:
                del self._pending[index]
                return True
        return False

    def _take(self) -> list[tuple[Sequence[Item], Waiter]]:
        """The next batch: the oldest submission, then those after it that fit max_batch."""
        pending, limit = self._pending, self._max_batch  # locals: this runs per submission
        if not pending:
            return []
        taken = [pending.popleft()]
        size = len(taken[0][0])
        while pending and size + len(pending[0][0]) <= limit:
            submission = pending.popleft()
            size += len(submission[0])
            taken.append(submission)
        return taken

    @staticmethod
    def _items(batch: list[tuple[Sequence[Item], Waiter]]) -> list[Item]:
        return [item for items, _ in batch for item in items]

    def _settle(
        self, batch: list[tuple[Sequence[Item], Waiter]], results: Sequence[Result]
    ) -> None:
        """Each caller its own results: handle answered one per item, in the items' order."""
        start, hand = 0, self._set
        for items, waiter in batch:
            stop = start + len(items)
            share = results[start:stop]
            hand(waiter, share if isinstance(share, list) else list(share), None)
            start = stop

    def _fail(self, batch: list[tuple[Sequence[Item], Waiter]], error: BaseException) -> None:
        """The batch's failure is every caller's failure; a stop is raised again afterwards."""
        # Even when the runner is being stopped: a caller of a taken batch waits without limit.
        for _, waiter in batch:
            self._set(waiter, [], error)
        if not isinstance(error, Exception):
            raise error


class _Outcome(Generic[Result]):
    """A thread's (or greenlet's) wait for its results, set once by the batch thread.

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


class Batcher(_GroupCommit[Item, Result, _Outcome[Result]]):
    """Runs handle(items) -> results (one per item, same order) on batches of submitted items."""

    def __init__(
        self,
        handle: Callable[[list[Item]], Sequence[Result]],
        max_batch: int,
        name: str,
        wait_seconds: float = 30.0,
        effect_free: bool = False,
    ) -> None:
        super().__init__(max_batch, name)
        # wait_seconds bounds the wait for a batch to take a submission, not for its outcome;
        # only where handle has no effect (reads) may a caller also give up on a taken batch.
        self._handle = handle
        self._wait_seconds = wait_seconds
        self._effect_free = effect_free
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
        outcome: _Outcome[Result] = _Outcome()
        with self._wake:
            if self._thread is None:
                # Started on first use, so it belongs to the process that serves (after a fork).
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._pending.append((items, outcome))
            self._wake.notify()
        results = outcome.wait(self._wait_seconds)
        return self._late(outcome) if results is None else results

    def _late(self, outcome: _Outcome[Result]) -> list[Result]:
        # Under the lock _next takes with: a submission is either withdrawn or taken, never both.
        with self._wake:
            withdrawn = self._withdraw(outcome)
        if withdrawn:
            raise BatchTimeout(f"{self._name}: not taken within {self._wait_seconds} s")
        if self._effect_free:  # a read given up on changes nothing: keep the answer prompt
            raise BatchTimeout(f"{self._name}: no outcome within {self._wait_seconds} s")
        # Taken before we could withdraw it: its batch may commit, so its outcome is the only
        # true answer. The handler ends by itself (statements have their own timeout).
        return outcome.wait_until_set()

    def _set(
        self, waiter: _Outcome[Result], results: list[Result], error: BaseException | None
    ) -> None:
        waiter.set(results, error)

    def _next(self) -> list[tuple[Sequence[Item], _Outcome[Result]]]:
        with self._wake:
            while not self._pending:
                self._wake.wait()
            return self._take()

    def _run(self) -> None:
        while True:
            batch = self._next()
            try:
                results = self._handle(self._items(batch))
            except BaseException as error:
                self._fail(batch, error)
                continue
            self._settle(batch, results)


class AsyncBatcher(_GroupCommit[Item, Result, asyncio.Future[list[Result]]]):
    """Batcher for coroutines on one event loop: the same group commit, no thread per caller.

    Callers await submit(); one task takes everything that arrived while the previous batch
    ran and awaits handle(items) -> results (a statement on an async connection), so the loop
    keeps serving while a batch commits. A caller waits without limit; one cancelled before its
    batch is taken is withdrawn (never run), as a Batcher's caller that gives up.
    """

    def __init__(
        self,
        handle: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        max_batch: int,
        name: str,
    ) -> None:
        super().__init__(max_batch, name)
        self._handle = handle
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Run item in the next batch and return its result (or raise the batch's error)."""
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._pending.append(((item,), future))
        if self._wake is None or self._task is None:
            # Made on first use, so they belong to the loop that runs the batches.
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._wake), name=self._name)
        self._wake.set()
        try:
            return (await future)[0]
        except asyncio.CancelledError:
            # Not taken yet: it never runs (a claim would leave a row sending, with no sender).
            self._withdraw(future)
            raise

    def _set(
        self,
        future: asyncio.Future[list[Result]],
        results: list[Result],
        error: BaseException | None,
    ) -> None:
        if future.done():  # its caller was cancelled (a stopping worker)
            return
        if error is None:
            future.set_result(results)
        elif isinstance(error, Exception):
            future.set_exception(error)
        else:  # the loop is stopping: so is everyone awaiting it
            future.cancel()

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            while batch := self._take():
                try:
                    results = await self._handle(self._items(batch))
                except BaseException as error:
                    self._fail(batch, error)
                    continue
                self._settle(batch, results)
