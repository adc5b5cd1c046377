"""PostgreSQL restarted (fast mode) during a stream of posts: quick 503s, nothing lost.

And no Herald process is restarted: each one finds the new server by itself.
"""

from __future__ import annotations

import time
from collections import Counter

from dev.embedded import EmbeddedPostgres
from herald.core.settings import Settings
from tests.chaos.figures import Figures
from tests.chaos.outcomes import all_ids, audit, wait_all_sent
from tests.chaos.traffic import Stream, accepted_ids
from tests.stack import Stack, sender_outcomes

FAST_S = 5.0  # the contract: a 503 with Retry-After within 5 s, never a hang


def test_postgres_fast_restart_mid_stream_answers_503_quickly_and_loses_nothing(
    idle_stack: Stack, chaos_settings: Settings, postgres: EmbeddedPostgres, figures: Figures
) -> None:
    stack, database = idle_stack, str(chaos_settings.database_url)
    stack.start_sender(processes=1, threads=8)
    pids = {name: process.popen.pid for name, process in stack.processes.items()}
    with Stream(stack.api, stack.headers, threads=8) as stream:
        stream.wait_for(lambda a: a.code == 202, 30, "a first accepted post")
        time.sleep(1)
        down = time.monotonic()
        postgres.restart()
        up = time.monotonic()
        # No Herald process is restarted: the api must find the new server by itself.
        back = stream.wait_for(lambda a: a.started >= up and a.code == 202, 30, "a post after")
        time.sleep(1)
    answers = stream.answers()
    refused = [a for a in answers if a.code != 202]
    assert Counter(a.code for a in refused) == {503: len(refused)}, refused[:5]
    assert all(a.retry_after for a in refused), "a 503 without Retry-After"
    for name, process in stack.processes.items():
        assert process.popen.poll() is None, f"{name} died:\n{process.output()[-3000:]}"
        assert process.popen.pid == pids[name]

    ids = accepted_ids(answers)
    assert len(set(ids)) == len(ids)
    # Rows are the truth: every 202 has one, and a row without a 202 (a commit whose answer
    # was cut) is a message Herald owes too, so all of them are checked.
    stored = all_ids(database)
    assert set(ids) <= set(stored)
    delivered_s = wait_all_sent(database, stored, timeout=60)
    # The status service reconnected too.
    assert stack.status_of(ids[-1]) == "sent"

    result = audit(database, stack.provider, stored)
    slowest = max((a.seconds for a in refused), default=0.0)
    figures(
        posts=len(answers),
        answered_503=len(refused),
        max_503_s=round(slowest, 3),
        restart_s=round(up - down, 2),
        first_202_after_restart_s=round(back.ended - up, 2),
        rows_without_202=len(stored) - len(ids),
        **result.figures(),
        all_sent_after_s=round(delivered_s, 1),
        skipped_queue_messages=sender_outcomes(stack).get("skipped", 0),
    )
    assert refused, "no post fell within the restart"
    assert slowest < FAST_S
    assert result.lost == 0
    assert result.duplicate_effects == 0
    assert result.foreign_effects == 0
