"""One tenant flooding the api at 10x its rate, over real HTTP: another tenant's answers stay
as fast as when it had the api to itself (issue 14's acceptance)."""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import httpx
from sqlalchemy import Engine

from herald.core import keys
from herald.core.db import make_engine
from herald.core.settings import Settings
from tests.stack import running_stack

MESSAGE = {"destination": "+15550100", "body": "hello"}
RATE = 20  # HERALD_TENANT_RATE: the flooding tenant's, messages per second
FLOOD_THREADS = 4
FLOOD_RATE = 10 * RATE  # requests per second, one message each
BLOCKS = 4  # quiet and flooded blocks alternate, so drift in the machine's load hits both
SAMPLES_PER_BLOCK = 100
FLOOR_SECONDS = 0.005  # below a few ms, a 2x ratio is noise on a shared machine


def _new_key(engine: Engine, tenant: str, rate: int | None) -> str:
    with engine.begin() as conn:
        return keys.create(conn, tenant, "flood test", rate)[1]


def _flood(
    api: str, key: str, running: Event, stop: Event, out: Queue[tuple[dict[int, int], float]]
) -> None:
    """Post from FLOOD_THREADS threads, FLOOD_RATE requests per second in all, until stop;
    put the answers' codes and the seconds it flooded."""
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def run(offset: int) -> None:
        interval = FLOOD_THREADS / FLOOD_RATE
        started = time.monotonic() + offset * interval / FLOOD_THREADS
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(timeout=10, headers=headers) as client:
            sent = 0
            while not stop.is_set():
                time.sleep(max(0.0, started + sent * interval - time.monotonic()))
                code = client.post(f"{api}/messages", json=MESSAGE).status_code
                sent += 1
                with lock:
                    seen[code] += 1
                running.set()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(FLOOD_THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((dict(seen), time.monotonic() - started))


def _timed_posts(client: httpx.Client, api: str, count: int) -> list[float]:
    """count posts one after another (about 50 a second); each one's seconds, all 202."""
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.post(f"{api}/messages", json=MESSAGE)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 202, answer.text
        time.sleep(0.02)
    return seconds


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def test_a_tenant_flooding_at_ten_times_its_rate_does_not_delay_another(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"tenant_rate": RATE})
    with running_stack(settings, sender=False) as stack:
        engine = make_engine(settings, pool_size=1)
        flooder = _new_key(engine, "flooder", None)
        calm = _new_key(engine, "calm", 1000)  # never limited itself: only the flood can slow it
        engine.dispose()
        spawn = multiprocessing.get_context("spawn")  # its own GIL: the flood's client work
        quiet: list[float] = []  # must not show up as the calm tenant's latency
        flooded: list[float] = []
        flood_codes: Counter[int] = Counter()
        flood_seconds = 0.0
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {calm}"}) as client:
            _timed_posts(client, stack.api, 20)  # warm connections and both workers
            for _ in range(BLOCKS // 2):
                quiet += _timed_posts(client, stack.api, SAMPLES_PER_BLOCK)
                running, stop, out = spawn.Event(), spawn.Event(), spawn.Queue()
                args = (stack.api, flooder, running, stop, out)
                flood = spawn.Process(target=_flood, args=args)
                flood.start()
                assert running.wait(30), "the flood never got an answer"
                time.sleep(1.5)  # the flood's burst spent, it runs into 429s
                flooded += _timed_posts(client, stack.api, SAMPLES_PER_BLOCK)
                stop.set()
                codes, seconds = out.get(timeout=30)
                flood.join(30)
                flood_codes.update(codes)
                flood_seconds += seconds
        flood_rate = flood_codes.total() / flood_seconds
        assert flood_rate >= 8 * RATE, f"the flood reached only {flood_rate:.0f} requests/s"
        assert set(flood_codes) == {202, 429}, flood_codes
        assert flood_codes[429] > 5 * flood_codes[202], flood_codes  # ~9 of 10 refused
        quiet_p99, flooded_p99 = _p99(quiet), _p99(flooded)
        report = (
            f"calm tenant: quiet p50 {statistics.median(quiet) * 1000:.1f} ms"
            f" p99 {quiet_p99 * 1000:.1f} ms; flooded p50 {statistics.median(flooded) * 1000:.1f}"
            f" ms p99 {flooded_p99 * 1000:.1f} ms; flood {flood_rate:.0f} requests/s,"
            f" answers {dict(flood_codes)}"
        )
        print(report)
        assert flooded_p99 <= 2 * max(quiet_p99, FLOOR_SECONDS), report
        assert statistics.median(flooded) <= 2 * max(statistics.median(quiet), FLOOR_SECONDS)
