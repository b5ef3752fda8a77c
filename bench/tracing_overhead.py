"""What tracing costs per REST poll: off (the API's no-op tracer) against on (SDK, OTLP export).

Two measurements, each interleaving the configurations round by round so that
drift (CPU frequency, GC) hits them alike:

  replay     the instrumented path in a tight loop, without the network: the
             real Bybit adapter (signing, msgspec decoding), RestClient (request
             span, metrics, exemplar) and RestSource (poll span, hand-off),
             with the simulator's responses recorded once and replayed by a
             stub session. Per-poll CPU cost, where tracing's share is largest.
  simulator  real polls over loopback HTTP against the built-in simulator (its
             rate limits raised so that only the agent's own work is timed).

"on" exports over OTLP/HTTP to a local receiver (tests/telemetry/otlp_receiver.py)
running in its own process, as a collector would.
Prints one JSON object: per-poll microseconds (median of the rounds' means)
per configuration, the overhead of each "on" against "off", and what the
tracing calls of one poll cost with tracing off (timed alone, in a loop).

  python bench/tracing_overhead.py [--polls 2000] [--rounds 7] [--sim-polls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict
from opentelemetry import trace
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.models import ExchangeConfig, TracingSection  # noqa: E402
from agent.exchanges import create_rest_api  # noqa: E402
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints  # noqa: E402
from agent.simulator import Simulator, SimulatorConfig  # noqa: E402
from agent.sources.rest_poller import RestSource  # noqa: E402
from agent.telemetry import tracing  # noqa: E402
from agent.telemetry.metrics import Metrics  # noqa: E402

CONFIGS = {"off": None, "on_ratio_0.05": 0.05, "on_ratio_1": 1.0}


class _Replay:
    """One replayed response (an ``async with session.request(...)`` stand-in)."""

    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status, self.headers, self._body = status, headers, body

    async def __aenter__(self) -> _Replay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self._body


class ReplaySession:
    """Sends the first request of each path for real, then replays its response (rate-limit headers dropped)."""

    closed = False

    def __init__(self, real: aiohttp.ClientSession) -> None:
        self._real = real
        self._cache: dict[tuple[str, str], tuple[int, CIMultiDict[str], bytes]] = {}

    async def close(self) -> None:
        await self._real.close()

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        key = (method, url.path)
        if key in self._cache:
            return _Replay(*self._cache[key])
        return self._record(key, method, url, kwargs)

    def _record(self, key: tuple[str, str], method: str, url: Any, kwargs: dict[str, Any]) -> Any:
        outer = self

        class _First:
            async def __aenter__(self) -> _Replay:
                async with outer._real.request(method, url, **kwargs) as resp:
                    body = await resp.read()
                    headers = CIMultiDict({"Content-Type": resp.headers.get("Content-Type", "application/json")})
                    outer._cache[key] = (resp.status, headers, body)
                return _Replay(*outer._cache[key])

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _First()


def _exchange_config(eps: Any) -> ExchangeConfig:
    return ExchangeConfig.model_validate({
        "venue": "bybit", "environment": "custom", "symbols": ["BTCUSDT", "ETHUSDT"],
        "endpoints": {"rest_url": eps.bybit.rest_url, "ws_public_url": eps.bybit.ws_public_url,
                      "ws_private_url": eps.bybit.ws_private_url},
        "credentials": {"api_key_env": "K", "api_secret_env": "S"}})


async def _source(eps: Any, replay: bool) -> tuple[RestSource, Any]:
    config = _exchange_config(eps)
    metrics = Metrics(CollectorRegistry())
    api = create_rest_api("bybit-bench", config, ResolvedEndpoints(eps.bybit.rest_url, eps.bybit.ws_public_url,
                                                                   eps.bybit.ws_private_url),
                          ApiCredentials(eps.bybit.api_key, eps.bybit.api_secret), metrics)
    await api.start()
    if replay:
        client = api._client  # type: ignore[attr-defined]
        client._session = ReplaySession(client._session)
    source = RestSource(exchange="bybit-bench", api=api, scheduler=None, metrics=metrics,  # type: ignore[arg-type]
                        positions_interval_seconds=1, prices_interval_seconds=1, clock_sync_interval_seconds=300,
                        symbols=lambda: ["BTCUSDT", "ETHUSDT"], on_positions=lambda s: None, on_prices=lambda b: None)
    return source, api


_RECEIVER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from tests.telemetry.otlp_receiver import OtlpReceiver

async def main():
    async with OtlpReceiver() as rx:
        print(rx.endpoint, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
        print(len(rx.spans), flush=True)

asyncio.run(main())
"""


def _start_receiver() -> tuple[str, subprocess.Popen[str]]:
    """An OTLP receiver in its own process, as a collector would be (its decoding is not charged here)."""
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc.stdout.readline().strip(), proc


def _stop_receiver(proc: subprocess.Popen[str]) -> int:
    """Close the receiver; returns how many spans it decoded."""
    out, _ = proc.communicate(timeout=30)
    return int(out.strip() or 0)


async def _round(source: RestSource, polls: int) -> float:
    """Mean microseconds per poll over ``polls`` polls (positions and prices alternating)."""
    started = time.perf_counter_ns()
    for i in range(polls):
        await (source.poll_positions() if i % 2 == 0 else source.poll_prices())
    return (time.perf_counter_ns() - started) / polls / 1000.0


async def _measure(source: RestSource, endpoint: str, polls: int, rounds: int) -> dict[str, float]:
    per_config: dict[str, list[float]] = {name: [] for name in CONFIGS}
    await _round(source, min(polls, 200))  # warm up caches, the replay cache and the JIT-less interpreter
    for _ in range(rounds):
        for name, ratio in CONFIGS.items():
            handle = tracing.setup_tracing(
                TracingSection(exporter="otlp" if ratio is not None else "none", endpoint=endpoint,
                               sample_ratio=ratio or 0.0, export_interval_seconds=1.0),
                service_version="bench", environ={})
            try:
                per_config[name].append(await _round(source, polls))
            finally:
                await handle.shutdown(10.0)
    return {name: round(statistics.median(values), 2) for name, values in per_config.items()}


def _off_instrumentation_us(iterations: int = 100_000) -> float:
    """Microseconds per poll of exactly the tracing calls a poll makes while tracing is off.

    One poll span and one request span (attribute dicts, no-op context
    managers), four ``set_attribute`` on no-op spans, one ``get_current_span``,
    two ``exemplar()`` and one ``detached_context()`` (the task spawn).
    """
    assert tracing.active_provider() is None
    started = time.perf_counter_ns()
    for _ in range(iterations):
        tracing.detached_context()
        with tracing.start_span("feedagent.rest.poll", attributes={
                "feedagent.exchange": "x", "feedagent.venue": "bybit", "feedagent.poll.kind": "prices"}) as span:
            with tracing.start_span("GET /v5/market/tickers", kind=tracing.SpanKind.CLIENT, attributes={
                    "http.request.method": "GET", "server.address": "h", "server.port": 1,
                    "feedagent.exchange": "x", "feedagent.rest.endpoint": "GET /v5/market/tickers"}):
                current = trace.get_current_span()
                current.set_attribute("http.response.status_code", 200)
                current.set_attribute("feedagent.rest.outcome", "ok")
                tracing.exemplar()
            span.set_attribute("feedagent.poll.items", 2)
            span.set_attribute("feedagent.rest.outcome", "ok")
            tracing.exemplar()
    return round((time.perf_counter_ns() - started) / iterations / 1000.0, 3)


def _overhead(us: dict[str, float]) -> dict[str, Any]:
    off = us["off"]
    return {name: {"us": round(v - off, 2), "percent": round(100 * (v - off) / off, 2)}
            for name, v in us.items() if name != "off"}


async def main(polls: int, rounds: int, sim_polls: int) -> dict[str, Any]:
    endpoint, receiver = _start_receiver()
    # Limits raised so that the venue's rate limit (and our budget honouring it) never paces the loop.
    sim = Simulator(SimulatorConfig(seed=7, position_change_interval_seconds=0, initial_positions_per_venue=2,
                                    bybit_private_limits_per_second={"/v5/position/list": 1_000_000},
                                    bybit_ip_limit_requests=100_000_000))
    eps = await sim.start()
    try:
        replay_source, replay_api = await _source(eps, replay=True)
        sim_source, sim_api = await _source(eps, replay=False)
        replay = await _measure(replay_source, endpoint, polls, rounds)
        simulator = await _measure(sim_source, endpoint, sim_polls, rounds)
        await replay_api.close()
        await sim_api.close()
    finally:
        await sim.stop()
        spans_received = _stop_receiver(receiver)
    return {
        "python": sys.version.split()[0],
        "polls_per_round": {"replay": polls, "simulator": sim_polls}, "rounds": rounds,
        "off_instrumentation_us_per_poll": _off_instrumentation_us(),
        "per_poll_us": {"replay": replay, "simulator": simulator},
        "overhead_vs_off": {"replay": _overhead(replay), "simulator": _overhead(simulator)},
        "spans_received": spans_received,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=2000, help="replayed polls per round and configuration")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sim-polls", type=int, default=200, help="simulator polls per round and configuration")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.polls, args.rounds, args.sim_polls)), indent=2))
