"""Fixtures for the simulator tests: a started simulator, request signing, polling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from agent.simulator import Simulator, SimulatorConfig

QUIET = {"price_tick_interval_seconds": 0, "position_change_interval_seconds": 0}


def quiet_config(**overrides: Any) -> SimulatorConfig:
    """A seeded config with the price walk and the autopilot off, so tests drive the market."""
    return SimulatorConfig(**{"seed": 7, **QUIET, **overrides})


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], *, timeout_seconds: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after the deadline (no fixed sleeps in tests)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_seconds} s")
        await asyncio.sleep(0.01)


def _decode(text: str) -> Any:
    """The JSON document, or the raw text when the body is not JSON (faults, bans)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _hmac(secret: str, text: str) -> str:
    # Written here independently of agent.simulator.auth, so the tests check that module.
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def bybit_headers(key: str, secret: str, query: str, *, ts_ms: int | None = None,
                  recv_window: int = 5000) -> dict[str, str]:
    """Headers of a signed Bybit GET whose raw query string is ``query``."""
    ts = str(now_ms() if ts_ms is None else ts_ms)
    return {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": str(recv_window),
            "X-BAPI-SIGN": _hmac(secret, ts + key + str(recv_window) + query)}


def binance_query(secret: str, params: str, *, ts_ms: int | None = None) -> str:
    """``params`` + timestamp + signature (last), as a Binance SIGNED query string."""
    ts = now_ms() if ts_ms is None else ts_ms
    total = f"{params}&timestamp={ts}" if params else f"timestamp={ts}"
    return f"{total}&signature={_hmac(secret, total)}"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A started simulator whose market only moves when the test moves it."""
    simulator = Simulator(quiet_config())
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client (no retries, no signing)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


class BybitClient:
    """Minimal signed Bybit GETs against the simulator, returning (status, headers, body)."""

    def __init__(self, session: aiohttp.ClientSession, sim: Simulator) -> None:
        assert sim.endpoints is not None
        self.session, self.ep = session, sim.endpoints.bybit

    async def get(self, path: str, query: str = "", *, signed: bool = True, secret: str | None = None,
                  key: str | None = None, ts_ms: int | None = None) -> tuple[int, Any, Any]:
        headers = bybit_headers(key or self.ep.api_key, secret or self.ep.api_secret, query,
                                ts_ms=ts_ms) if signed else {}
        url = f"{self.ep.rest_url}{path}" + (f"?{query}" if query else "")
        async with self.session.get(url, headers=headers) as resp:
            return resp.status, resp.headers, _decode(await resp.text())


class BinanceClient:
    """Minimal Binance requests against the simulator, returning (status, headers, body)."""

    def __init__(self, session: aiohttp.ClientSession, sim: Simulator) -> None:
        assert sim.endpoints is not None
        self.session, self.ep = session, sim.endpoints.binance

    async def request(self, method: str, path: str, params: str = "", *, signed: bool = False,
                      secret: str | None = None, key: str | None = None, ts_ms: int | None = None,
                      raw_query: str | None = None) -> tuple[int, Any, Any]:
        query = raw_query if raw_query is not None else (
            binance_query(secret or self.ep.api_secret, params, ts_ms=ts_ms) if signed else params)
        headers = {"X-MBX-APIKEY": key if key is not None else self.ep.api_key}
        url = f"{self.ep.rest_url}{path}" + (f"?{query}" if query else "")
        async with self.session.request(method, url, headers=headers) as resp:
            return resp.status, resp.headers, _decode(await resp.text())


@pytest.fixture
def bybit(http: aiohttp.ClientSession, sim: Simulator) -> BybitClient:
    return BybitClient(http, sim)


@pytest.fixture
def binance(http: aiohttp.ClientSession, sim: Simulator) -> BinanceClient:
    return BinanceClient(http, sim)


@pytest.fixture
async def start_sim() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """Start simulators with config overrides; all are stopped at teardown."""
    started: list[Simulator] = []

    async def start(**overrides: Any) -> Simulator:
        simulator = Simulator(quiet_config(**overrides))
        await simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        await simulator.stop()


# -- WebSocket helpers ----------------------------------------------------------------------------

# Short WebSocket periods so the tests run in well under a second each.
FAST_WS = {"bybit_ws_ticker_interval_seconds": 0.02, "binance_ws_mark_price_fast_interval_seconds": 0.05,
           "binance_ws_mark_price_interval_seconds": 0.15}


class WsClient:
    """A plain aiohttp WebSocket client with JSON helpers; every wait is bounded."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, payload: Any) -> None:
        await self.ws.send_str(json.dumps(payload))

    async def recv_msg(self, timeout_seconds: float = 3.0) -> aiohttp.WSMessage:
        """The next frame of any type (text, ping, close ...)."""
        return await self.ws.receive(timeout=timeout_seconds)

    async def recv(self, timeout_seconds: float = 3.0) -> Any:
        """The next text frame, decoded; fails on anything else."""
        msg = await self.ws.receive(timeout=timeout_seconds)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
        return json.loads(msg.data)

    async def recv_until(self, predicate: Callable[[Any], bool], *, timeout_seconds: float = 3.0) -> Any:
        """Skip text frames until one satisfies ``predicate``; fail after the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout_seconds} s")
            payload = await self.recv(left)
            if predicate(payload):
                return payload

    async def wait_closed(self, timeout_seconds: float = 3.0) -> aiohttp.WSMessage:
        """Read until the server closes; returns the closing message."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout_seconds} s")
            msg = await self.ws.receive(timeout=left)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                return msg


@pytest.fixture
async def ws_connect() -> AsyncIterator[Callable[..., Awaitable[WsClient]]]:
    """Open WebSocket clients (``await ws_connect(url, autoping=...)``); all are closed at teardown."""
    session = aiohttp.ClientSession()
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(url: str, **kwargs: Any) -> WsClient:
        ws = await session.ws_connect(url, **kwargs)
        opened.append(ws)
        return WsClient(ws)

    yield connect
    for ws in opened:
        await ws.close()
    await session.close()


def bybit_auth_args(key: str, secret: str, expires_ms: int) -> list[Any]:
    """``[apiKey, expires, signature]`` of a Bybit private WebSocket auth op."""
    return [key, expires_ms, _hmac(secret, f"GET/realtime{expires_ms}")]
