"""Exactly-once lifecycle across restarts, crashes and outages: the chaos matrix (issue 11).

For each venue and mode a real agent process runs against a simulator of the
test's own and goes through, in order: a graceful restart with changes made
while it was down, SIGKILL right after changes (several times, at different
moments), the private stream down while a position opens and closes inside the
outage, REST error bursts, and (Binance) listenKey expiry. After every phase
the consumer's view is compared with the simulator's ledger: 0 lost, 0
duplicated, ``seq`` strictly increasing per owner (redelivered ids dropped, as
a consumer does).
"""

from __future__ import annotations

import asyncio

import pytest

from agent.core.events import StatusEvent
from tests.integration.chaos import ChaosRun
from tests.integration.harness import eventually

MODES = [("rest", "rest"), ("hybrid", "rest"), ("shadow", "ws"), ("shadow", "rest")]


def positions_trust(events: list[StatusEvent]) -> list[tuple[str, str]]:
    return [(e.state, e.reason) for e in events if e.scope == "positions"]


@pytest.mark.parametrize("venue", ["bybit", "binance"])
@pytest.mark.parametrize(("mode", "primary"), MODES, ids=["rest", "hybrid", "shadow-ws", "shadow-rest"])
async def test_chaos_matrix_loses_nothing_and_repeats_nothing(tmp_path, venue, mode, primary):
    ws_authoritative = mode == "hybrid" or (mode == "shadow" and primary == "ws")
    async with ChaosRun(tmp_path, venue, mode, shadow_primary=primary) as run:
        run.change(2)
        await run.start_agent()
        await run.check("first start")
        for _ in range(3):
            run.change()
            await run.settled()

        # graceful restart; while down one position closes, one opens, one is resized
        await run.stop_agent()
        run.change(3)
        await run.start_agent()
        got = await run.check("graceful restart")
        assert got.redelivered == 0, "a graceful stop confirmed everything it wrote"

        # SIGKILL at different moments: right after a change, and once the change was sent
        for delay_seconds in (0.0, 0.05, 0.2):
            run.change()
            await asyncio.sleep(delay_seconds)  # where the kill lands; nothing waits for a result here
            await run.stop_agent(kill=True)
            run.change(2)
            await run.start_agent()
            await run.check(f"kill -9 after {delay_seconds}s")

        # the private stream is refused for a while; a position opens and closes inside the outage
        outage = run.sim.faults.inject(venue, "ws_drop", stream="private", duration_seconds=60)
        run.change()
        await run.settled()
        run.change()
        await run.settled()
        run.sim.faults.clear(outage)
        await run.check("private stream outage")
        if ws_authoritative:
            trust = positions_trust(run.delivered().statuses())
            assert ("degraded", "private_stream_down") in trust
            await eventually(lambda: positions_trust(run.delivered().statuses())[-1][0] == "ok",
                             what="the view to say ok once the stream is back")

        # REST error bursts (a short Retry-After: the agent honours it, and the test should not wait a minute)
        retry_after = {"retry_after_seconds": 1} if venue == "binance" else {}
        for status in (429, 503):
            run.sim.faults.inject(venue, "rest_error", status=status, count=4, **retry_after)
            run.change()
            await run.settled()
        await run.check("REST error bursts")

        if venue == "binance" and mode != "rest":
            run.sim.faults.inject(venue, "listen_key_expire")
            run.change()
            await run.settled()
            await run.check("listenKey expiry")

        await run.stop_agent()
        final = await run.check("the end")
        trust = positions_trust(final.statuses())
        assert not trust or trust[-1][0] == "ok", f"the view ended degraded: {trust}"
