"""The verdict does not depend on when the REST poll falls relative to the WebSocket's push (pure, seeded).

A venue computes its mark price on a fixed cadence (Binance: once a second, pushed on
``@markPrice@1s``; Bybit: every 100 ms on ``tickers``). REST returns the latest computed value; the
WebSocket pushes it some time after it was computed. Each REST sample is joined as of its receive
time with the WebSocket state, within the lag window. Sweeping the poll phase over one push period
must give the same verdict: pass when the feeds agree, fail under a price drift of 0.5 % or a
WebSocket that lags beyond the window.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from agent.core.observations import MarkPriceBatch, MarkPriceObs
from agent.shadow.comparator import Comparator
from agent.shadow.model import Sample
from agent.shadow.verdict import judge_window

T0 = 1_767_229_200_000
TICKS = {"BTCUSDT": Decimal("0.10"), "ETHUSDT": Decimal("0.01")}
START = {"BTCUSDT": Decimal("67250.00"), "ETHUSDT": Decimal("3480.50")}
WINDOW_S = 1200
POLL_MS = 5000
VENUES = {  # name: (compute period ms, push delay after the computation ms)
    "binance": (1000, 430),   # the push loop runs on its own timer: up to a period behind the computation
    "bybit": (100, 40),
}


def prices(period_ms: int, seed: int) -> dict[str, list[Decimal]]:
    """One computed mark price per period per symbol: a seeded walk on the tick grid (up to 4 bp a step)."""
    rng = random.Random(seed)
    path = {}
    for symbol, start in START.items():
        values, price = [], start
        for _ in range(WINDOW_S * 1000 // period_ms + 2):
            price += TICKS[symbol] * rng.randint(-int(start * Decimal("0.0004") / TICKS[symbol]),
                                                 int(start * Decimal("0.0004") / TICKS[symbol]))
            values.append(price)
        path[symbol] = values
    return path


def run(venue: str, phase_ms: int, *, drift: Decimal = Decimal(0), ws_extra_delay_ms: int = 0,
        seed: int = 7) -> tuple[str, int, int]:
    period, push_delay = VENUES[venue]
    path = prices(period, seed)
    c = Comparator("x", poll_interval_seconds=POLL_MS / 1000, tick_size_by_symbol=TICKS,
                   max_ws_lag_seconds=2.0, max_ws_silence_seconds=10.0)
    deliveries: list[tuple[int, int, str, dict[str, str]]] = []
    for k in range(WINDOW_S * 1000 // period):
        computed = T0 + k * period
        ws = {s: str((path[s][k] * (1 + drift)).quantize(TICKS[s])) for s in TICKS}
        deliveries.append((computed + push_delay + ws_extra_delay_ms, 0, "ws", ws))
    for t in range(T0 + phase_ms + POLL_MS, T0 + WINDOW_S * 1000 - 3000, POLL_MS):
        served_at = t - 15                       # the server answered 15 ms before the reply arrived
        k = (served_at - T0) // period
        deliveries.append((t, 1, "rest", {s: str(path[s][k]) for s in TICKS}))
    samples: list[Sample] = []
    for t, _, origin, values in sorted(deliveries):
        batch = MarkPriceBatch(prices=tuple(MarkPriceObs(symbol=s, mark_price=p) for s, p in values.items()),
                               source=origin, ts_received_ms=t)  # type: ignore[arg-type]
        samples += c.observe(origin, batch, t).samples
    samples += c.flush().samples
    verdict = judge_window(samples, exchange="x", window_start_ms=T0, window_end_ms=T0 + WINDOW_S * 1000,
                           min_samples=381, max_mismatch_ratio=0.01)
    return verdict.verdict, verdict.samples, verdict.mismatches


PHASES = range(0, 1000, 50)  # one Binance push period, 20 phases


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_healthy_feeds_pass_at_every_poll_phase(venue: str) -> None:
    results = {phase: run(venue, phase) for phase in PHASES}

    assert {verdict for verdict, _, _ in results.values()} == {"pass"}, results
    assert all(mismatches == 0 and n >= 381 for _, n, mismatches in results.values()), results


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_a_drift_of_half_a_percent_fails_at_every_poll_phase(venue: str) -> None:
    results = {phase: run(venue, phase, drift=Decimal("0.005")) for phase in PHASES[::4]}

    assert {verdict for verdict, _, _ in results.values()} == {"fail"}, results


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_a_websocket_lagging_beyond_the_window_fails_at_every_poll_phase(venue: str) -> None:
    results = {phase: run(venue, phase, ws_extra_delay_ms=4000) for phase in PHASES[::4]}

    assert {verdict for verdict, _, _ in results.values()} == {"fail"}, results
