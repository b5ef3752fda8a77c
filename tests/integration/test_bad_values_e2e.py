"""Bad values and deep nesting end to end: the agent counts them and keeps going.

The frames go out on the simulator's own live WebSocket connections (real loopback sockets), among
its real frames, while a position is open: a mark price of ``9e999999`` accepted there would make the
PositionBook's PnL of that position overflow and end the public consumer. Admin POST bodies nested
ten thousand deep get a 400, never a 500.
"""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from agent.core.events import MarkPriceEvent
from agent.exchanges.parsing import to_decimal
from tests.integration.harness import agent_on_simulator, eventually

TOKEN = "test-admin-token-0123456789"
DEEP = 10_000
PRICE_STREAM = {"bybit": "public", "binance": "market"}  # the simulator's name of each venue's price route


def bad_frames(venue: str, now_ms: int) -> list[str]:
    """One frame per bad value, each otherwise valid for a subscribed topic."""
    if venue == "bybit":
        def frame(mark: str, ts: int = now_ms) -> str:
            return json.dumps({"topic": "tickers.BTCUSDT", "type": "delta", "ts": ts, "cs": 1,
                               "data": {"symbol": "BTCUSDT", "markPrice": mark}})
    else:
        def frame(mark: str, ts: int = now_ms) -> str:
            return json.dumps({"stream": "btcusdt@markPrice@1s", "data": {
                "e": "markPriceUpdate", "E": ts, "s": "BTCUSDT", "p": mark, "i": "67250.0", "r": "0.0001", "T": 0}})
    return [frame("9e999999"), frame("NaN"), frame("Infinity"), frame("67250.0", ts=1), "[" * DEEP + "]" * DEEP]


def malformed(agent, exchange: str) -> float:
    registry = agent.metrics.registry
    return ((registry.get_sample_value("feedagent_messages_malformed_total", {"exchange": exchange, "source": "ws"})
             or 0.0)
            + (registry.get_sample_value("feedagent_ws_frames_malformed_total",
                                         {"exchange": exchange, "stream": "public"}) or 0.0))


def ws_marks(log, exchange: str) -> list[MarkPriceEvent]:
    return [e for e in log.of_kind("mark_price", exchange) if e.source == "ws" and e.symbol == "BTCUSDT"]


@pytest.mark.parametrize("venue", ["bybit", "binance"])
async def test_public_consumer_survives_bad_values_and_deep_frames(tmp_path, venue):
    name = f"{venue}-x"
    async with agent_on_simulator(tmp_path, modes={venue: "hybrid"}) as (agent, log, sim):
        await eventually(agent.is_ready, what="ready")
        sim.market.open_position(venue, "BTCUSDT", "long", "2")
        await eventually(lambda: any(e.change == "opened" for e in log.positions(name)), what="open over ws")
        await eventually(lambda: ws_marks(log, name), what="ws mark prices")
        [conn] = sim.ws.live(venue, PRICE_STREAM[venue])

        before = malformed(agent, name)
        for count, text in enumerate(bad_frames(venue, int(time.time() * 1000)), start=1):
            await conn.ws.send_str(text)
            # one at a time: each is counted before the next goes out
            await eventually(lambda: malformed(agent, name) >= before + count, what=f"bad frame {count} counted")
        seen = len(ws_marks(log, name))

        await eventually(lambda: len(ws_marks(log, name)) >= seen + 2, what="mark prices keep flowing")
        for event in ws_marks(log, name):
            to_decimal(event.mark_price, "mark_price")  # every one published is a sane number
        for event in log.positions(name):
            if event.unrealized_pnl is not None:
                to_decimal(event.unrealized_pnl, "unrealized_pnl")
        # nothing had to be restarted: the parse edge caught every bad value
        assert agent.metrics.registry.get_sample_value(
            "feedagent_task_restarts_total", {"exchange": name, "task": "hybrid/public-consumer"}) == 0
        sim.market.close_position(venue, "BTCUSDT")
        await eventually(lambda: any(e.change == "closed" for e in log.positions(name)), what="close over ws")


async def _post(http, url: str, body: bytes) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_admin_posts_nested_too_deep_are_a_400(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDAGENT_ADMIN_TOKEN", TOKEN)
    async with agent_on_simulator(tmp_path, modes={"bybit": "rest"}) as (agent, log, sim):
        base = agent.admin.url
        mode_url, reload_url = f"{base}/v1/exchanges/bybit-x/mode", f"{base}/-/reload"
        deep_list = ("[" * DEEP + "]" * DEEP).encode()
        deep_object = ('{"mode":' * DEEP + '"rest"' + "}" * DEEP).encode()
        async with aiohttp.ClientSession() as http:
            for url in (mode_url, reload_url):
                for body in (deep_list, deep_object):
                    status, answer = await _post(http, url, body)
                    assert status == 400 and "nested too deeply" in answer["error"], (url, status, answer)
            status, answer = await _post(http, reload_url, b"[1, 2]")
            assert status == 400 and "no parameters" in answer["error"]
            # the server is fine afterwards: sane bodies get through to the call itself
            assert (await _post(http, mode_url, b'{"mode": "rest"}'))[0] == 200
            for body in (b"", b"{}"):
                status, answer = await _post(http, reload_url, body)
                assert "ok" in answer, (status, answer)  # the reload ran (whatever it made of the config)
