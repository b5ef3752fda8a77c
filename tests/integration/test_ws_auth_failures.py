"""Auth refusals of the private stream reach the auth-failure health check, on both venues.

Bybit authenticates with an ``auth`` op, so a refusal is an ``AuthAck(ok=False)``. Binance authenticates
with the listenKey: the key is refused when its REST call (create, keepalive) is refused for the API key,
or when the stream's handshake is refused. All of them must count as ``auth_rejected``, the series the
``ws_auth_failures_per_window`` check reads.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import agent_on_simulator, eventually

CHECK = "ws_auth_failures_per_window"
# Rollback stays off (the harness default): the check is read, nothing trips on it.
HEALTH = {"health": {"check_interval_seconds": 0.25, "window_seconds": 30}}


def check_value(agent, exchange: str) -> float:
    return agent.metrics.registry.get_sample_value(
        "feedagent_health_check_value", {"exchange": exchange, "check": CHECK}) or 0.0


def auth_rejected(agent, exchange: str) -> float:
    return agent.metrics.registry.get_sample_value(
        "feedagent_ws_connects_total", {"exchange": exchange, "stream": "private", "outcome": "auth_rejected"}) or 0.0


@pytest.mark.parametrize("venue", ["bybit", "binance"])
async def test_refused_private_stream_is_an_auth_failure(tmp_path, venue):
    name = f"{venue}-x"
    async with agent_on_simulator(tmp_path, modes={venue: "hybrid"}, overrides={venue: HEALTH}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        assert agent.pipelines[name].ws.counters()["auth_failures"] == 0
        # refused from now on; dropping the live connection makes the reconnects authenticate again
        sim.faults.inject(venue, "ws_reject_auth", duration_seconds=30)
        sim.faults.inject(venue, "ws_drop", stream="private")

        await eventually(lambda: check_value(agent, name) >= 2, timeout_seconds=10,
                         what=f"{venue}: {CHECK} counts the refusals")
        assert agent.pipelines[name].ws.counters()["auth_failures"] >= 2
        assert auth_rejected(agent, name) >= 2


async def test_binance_listen_key_refused_for_the_api_key_is_an_auth_failure(tmp_path):
    async with agent_on_simulator(tmp_path, modes={"binance": "hybrid"},
                                  overrides={"binance": HEALTH}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        # -2015 (HTTP 401) on every listenKey call, then the key expires: the reconnect must create a new one
        sim.faults.inject("binance", "reject_auth", endpoint="/fapi/v1/listenKey", duration_seconds=30)
        sim.faults.inject("binance", "listen_key_expire")

        await eventually(lambda: check_value(agent, "binance-x") >= 2, timeout_seconds=10,
                         what=f"binance: {CHECK} counts the refused listenKey")
        assert auth_rejected(agent, "binance-x") >= 2
        # the public stream has nothing to do with the key: its connects are not auth failures
        assert agent.metrics.registry.get_sample_value("feedagent_ws_connects_total", {
            "exchange": "binance-x", "stream": "market", "outcome": "auth_rejected"}) in (None, 0.0)
