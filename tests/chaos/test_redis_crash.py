"""Redis killed and restarted (from its AOF) during a stream of posts: every 202 is sent."""

from __future__ import annotations

import time
from collections import Counter

from dev.embedded import EmbeddedRedis
from herald.core.settings import Settings
from tests.chaos.figures import Figures
from tests.chaos.outcomes import audit, wait_all_sent
from tests.chaos.traffic import Stream, accepted_ids
from tests.stack import Stack, sender_outcomes

OUTAGE_S = 3.0  # longer than stuck_after: the sweeper, not luck, must bring the posts back
FAST_S = 5.0  # the only timing bound: an outage answer is never slow


def test_redis_killed_mid_stream_every_accepted_message_is_still_sent(
    idle_stack: Stack, chaos_settings: Settings, redis_server: EmbeddedRedis, figures: Figures
) -> None:
    stack, database = idle_stack, str(chaos_settings.database_url)
    stack.start_sender(processes=1, threads=8)
    pids = {name: process.popen.pid for name, process in stack.processes.items()}
    with Stream(stack.api, stack.headers, threads=4) as stream:
        stream.wait_for(lambda a: a.code == 202, 30, "a first accepted post")
        time.sleep(1)
        down = time.monotonic()
        redis_server.kill()
        time.sleep(OUTAGE_S)
        restarting = time.monotonic()
        redis_server.start()
        up = time.monotonic()
        stream.wait_for(lambda a: a.started > up and a.code == 202, 30, "a post after Redis")
        time.sleep(1)
    answers = stream.answers()
    assert Counter(a.code for a in answers) == {202: len(answers)}, [
        a for a in answers if a.code != 202
    ][:5]
    # Nothing was restarted but Redis: every Herald process rode out the outage.
    for name, process in stack.processes.items():
        assert process.popen.poll() is None, f"{name} died:\n{process.output()[-3000:]}"
        assert process.popen.pid == pids[name]
    # Posts that began and ended while Redis was dead: their enqueue could only fail.
    during = [a for a in answers if a.started >= down and a.ended <= restarting]
    ids = accepted_ids(answers)
    assert len(set(ids)) == len(ids)
    delivered_s = wait_all_sent(database, ids, timeout=60)

    result = audit(database, stack.provider, ids)
    slowest = max((a.seconds for a in during), default=0.0)
    figures(
        posts=len(answers),
        posts_during_outage=len(during),
        outage_s=round(up - down, 1),
        max_post_s_during_outage=round(slowest, 3),
        **result.figures(),
        all_sent_after_s=round(delivered_s, 1),
        skipped_queue_messages=sender_outcomes(stack).get("skipped", 0),
    )
    assert during, "no post fell within the outage"
    assert slowest < FAST_S
    assert result.lost == 0
    assert result.duplicate_effects == 0
    assert result.foreign_effects == 0
