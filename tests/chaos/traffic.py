"""Client traffic for the chaos tests: bursts and streams of posts, every answer timed and kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import httpx

DESTINATION = "+15550100"


@dataclass(frozen=True)
class Answer:
    """What one POST /messages got: its HTTP status (0: no answer at all) and its timing."""

    started: float  # time.monotonic() when the request went out
    seconds: float
    code: int
    message_id: str | None = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def post(client: httpx.Client, api: str, body: str) -> Answer:
    """POST one message; an answer whatever happens (a client error is code 0, not a raise)."""
    started = time.monotonic()
    try:
        answer = client.post(f"{api}/messages", json={"destination": DESTINATION, "body": body})
    except httpx.HTTPError as error:
        return Answer(started, time.monotonic() - started, 0, error=repr(error))
    seconds = time.monotonic() - started
    message_id = answer.json()["id"] if answer.status_code == 202 else None
    retry_after = answer.headers.get("Retry-After")
    return Answer(started, seconds, answer.status_code, message_id, retry_after)


def accepted_ids(answers: list[Answer]) -> list[str]:
    """The ids of the messages that got a 202: each one Herald has promised to deliver."""
    return [a.message_id for a in answers if a.code == 202 and a.message_id is not None]


def client(headers: dict[str, str]) -> httpx.Client:
    """A client for one test's traffic, sending headers (the stack's key): generous timeouts,
    so a slow answer is measured."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64), headers=headers)


class Stream:
    """Posts from several threads, each one after the other with a pause, until the block ends.

    The pause keeps the rate (and the number of messages to check) moderate on a small machine.
    """

    def __init__(
        self, api: str, headers: dict[str, str], threads: int = 4, pause: float = 0.02
    ) -> None:
        self._api = api
        self._pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._client = client(headers)
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self._client.close()

    def _run(self, n: int) -> None:
        count = 0
        while not self._stop.is_set():
            answer = post(self._client, self._api, f"stream {n}-{count}")
            with self._lock:
                self._answers.append(answer)
            count += 1
            self._stop.wait(self._pause)

    def answers(self) -> list[Answer]:
        """Every answer so far, in the order they came."""
        with self._lock:
            return list(self._answers)

    def wait_for(self, wanted: Callable[[Answer], bool], timeout: float, what: str) -> Answer:
        """The first answer (from now on or before) that satisfies wanted; fail after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((a for a in self.answers() if wanted(a)), None)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
