"""kill -9 of the whole sender mid-burst, then a new sender: nothing lost, no effect twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from herald.core.settings import Settings
from tests.chaos.figures import Figures
from tests.chaos.outcomes import (
    audit,
    configure_provider,
    provider_stats,
    resent_count,
    status_counts,
    wait_all_sent,
)
from tests.chaos.traffic import accepted_ids, client, post
from tests.stack import Stack, sender_outcomes, wait_for

MESSAGES = 1_000
PROCESSES, THREADS = 2, 8


def _in_full_flow(stack: Stack, database: str) -> bool:
    """A tenth of the burst delivered, and several sends claimed (between claim and record)."""
    delivered = provider_stats(stack.provider)["unique"] >= MESSAGES // 10
    return delivered and status_counts(database).get("sending", 0) >= 2


def test_kill_9_of_the_sender_group_mid_burst_loses_nothing_and_repeats_no_effect(
    idle_stack: Stack, chaos_settings: Settings, figures: Figures
) -> None:
    stack, database = idle_stack, str(chaos_settings.database_url)
    configure_provider(stack.provider, latency_ms=20)
    stack.start_sender(processes=PROCESSES, threads=THREADS)
    with client(stack.headers) as http, ThreadPoolExecutor(32) as pool:
        burst = [pool.submit(post, http, stack.api, f"burst {n}") for n in range(MESSAGES)]
        # Mid-burst, with sends in flight: those are what a crash could lose or repeat.
        wait_for(lambda: _in_full_flow(stack, database), 60, "deliveries in full flow")
        stack.processes["sender"].kill_group()  # every worker, the sweeper, the sidecar
        posted_at_kill = sum(future.done() for future in burst)
        at_kill = status_counts(database)  # nothing moves a row now but new posts
        answers = [future.result() for future in burst]
    assert [a.code for a in answers] == [202] * MESSAGES, {a.code for a in answers}
    ids = accepted_ids(answers)
    assert len(set(ids)) == MESSAGES

    stack.start_sender(processes=PROCESSES, threads=THREADS)
    recovery_s = wait_all_sent(database, ids, timeout=120)

    result = audit(database, stack.provider, ids)
    figures(
        posted_at_kill=posted_at_kill,
        sent_at_kill=at_kill.get("sent", 0),
        claimed_at_kill=at_kill.get("sending", 0),
        **result.figures(),
        resent_after_kill=resent_count(database),
        recovery_s=round(recovery_s, 1),
        skipped_queue_messages=sender_outcomes(stack).get("skipped", 0),
    )
    # The kill caught sends in flight (their rows stay `sending`: no worker is left to record).
    assert at_kill.get("sending", 0) >= 1
    assert result.lost == 0
    assert result.duplicate_effects == 0
    assert result.foreign_effects == 0
    assert result.sent == MESSAGES
    assert provider_stats(stack.provider)["unique"] == MESSAGES
