"""Mark-price freshness of a running agent on the built-in simulator, per mode.

Prints one JSON object:
  staleness_ms      receive time minus exchange time of emitted mark prices (p50/p99/max), per venue
  age_at_receipt_ms how old the simulator's price was when the agent received it (p50/p99/max)
  view_lag_ms       simulator price change -> first agent event at least that new (p50/p99/max): the
                    delay a consumer actually sees, polling interval included
  events_per_second mark_price events per second per venue

  python bench/staleness.py --mode rest --seconds 20 [--interval-seconds 1]
  python bench/staleness.py --mode hybrid --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.loader import load_config  # noqa: E402
from agent.core.events import MarkPriceEvent  # noqa: E402
from agent.simulator.positions import PriceTick  # noqa: E402
from agent.supervisor import Supervisor  # noqa: E402


def _became_current(history: list[tuple[float, Decimal]], price: Decimal, seen_ms: float) -> float | None:
    """When the simulator last changed its mark to ``price`` before ``seen_ms``."""
    for at, value in reversed(history):
        if at <= seen_ms and value == price:
            return at
    return None


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    return {"n": len(ordered), "p50": round(q[49], 2), "p99": round(q[98], 2), "max": round(ordered[-1], 2)}


async def run(mode: str, seconds: float, interval_seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        exchanges = {
            f"{venue}-sim": {"venue": venue, "environment": "simulator", "symbols": ["BTCUSDT", "ETHUSDT"],
                             "mode": mode, "rest": {"positions_interval_seconds": interval_seconds,
                                                    "prices_interval_seconds": interval_seconds}}
            for venue in ("bybit", "binance")}
        doc = {"agent": {"state_dir": f"{tmp}/var"}, "admin": {"listen": "127.0.0.1:0"},
               "telemetry": {"log": {"level": "error"}}, "sinks": [{"type": "jsonl", "path": f"{tmp}/e.jsonl",
                                                                    "fsync": "never"}],
               "simulator": {"seed": 1}, "exchanges": exchanges}
        cfg = Path(tmp) / "c.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        agent = Supervisor(load_config(cfg), registry=CollectorRegistry())
        await agent.start()
        # per (venue, symbol): the moments the simulator's mark price changed, and to what
        changes: dict[tuple[str, str], list[tuple[float, Decimal]]] = {}

        def on_market(event: object) -> None:
            if isinstance(event, PriceTick):
                history = changes.setdefault((event.venue, event.symbol), [])
                if not history or history[-1][1] != event.mark_price:
                    history.append((time.time() * 1000, event.mark_price))

        agent.simulator.market.add_listener(on_market)
        queue = agent.bus.subscribe(capacity=1_000_000)
        marks: list[tuple[MarkPriceEvent, float]] = []
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=left)
                except TimeoutError:
                    break
                if isinstance(event, MarkPriceEvent):
                    marks.append((event, time.time() * 1000))
        finally:
            await agent.stop()
    result: dict[str, object] = {"mode": mode, "seconds": seconds, "rest_interval_seconds": interval_seconds}
    for venue in ("bybit", "binance"):
        mine = [(e, t) for e, t in marks if e.venue == venue]
        stale = [e.ts_received_ms - e.ts_exchange_ms for e, _ in mine if e.ts_exchange_ms is not None]
        age, lag = [], []
        for symbol in {e.symbol for e, _ in mine}:
            history = changes.get((venue, symbol), [])
            pending = 0  # index of the first change no event has caught up with yet
            for e, seen_ms in (m for m in mine if m[0].symbol == symbol):
                at = _became_current(history, Decimal(e.mark_price), seen_ms)
                if at is None:
                    continue
                age.append(seen_ms - at)
                while pending < len(history) and history[pending][0] <= at:
                    lag.append(seen_ms - history[pending][0])
                    pending += 1
        result[venue] = {"staleness_ms": percentiles(stale), "age_at_receipt_ms": percentiles(age),
                         "view_lag_ms": percentiles(lag),
                         "events_per_second": round(len(mine) / seconds, 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["rest", "hybrid"], default="rest")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval-seconds", type=float, default=1.0, help="REST polling interval")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.mode, args.seconds, args.interval_seconds))))


if __name__ == "__main__":
    main()
