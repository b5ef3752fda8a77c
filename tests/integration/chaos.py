"""Chaos runs: a real agent process on a simulator of the test's own, faults and restarts, ledger checks.

The agent runs as a subprocess (so that it can be killed with SIGKILL) against a
Simulator served from the test's own event loop; its jsonl sink is the record of
what a consumer got. After every phase the events are checked against the
simulator's ledger of position changes (``sim.record``): per position the same
opens and closes, the same final state, no fact sent twice under a new id, and
``seq`` strictly increasing per owner once redelivered ids are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from agent.core.events import Event, PositionEvent, StatusEvent, decode_event, event_owner
from agent.simulator import Simulator, SimulatorConfig
from tests.integration.harness import credentials_env, custom_exchange, eventually, feedagent_cmd, write_config
from tests.integration.lifecycle import assert_same_lifecycle

Key = tuple[str, int]


@dataclass
class Delivered:
    """What a consumer that de-duplicates by ``id`` got from the jsonl file."""

    events: list[Event] = field(default_factory=list)
    redelivered: int = 0
    torn_lines: int = 0

    def positions(self) -> list[PositionEvent]:
        return [e for e in self.events if isinstance(e, PositionEvent)]

    def statuses(self) -> list[StatusEvent]:
        return [e for e in self.events if isinstance(e, StatusEvent)]

    def open_positions(self) -> dict[Key, tuple[str, Decimal]]:
        held: dict[Key, tuple[str, Decimal]] = {}
        for e in self.positions():
            if e.change == "closed":
                held.pop((e.symbol, e.position_idx), None)
            else:
                held[(e.symbol, e.position_idx)] = (e.side, Decimal(e.size))
        return held


def read_delivered(path: Path) -> Delivered:
    """Decode the jsonl file as a consumer would: drop repeated ids, check ``seq`` per owner."""
    out = Delivered()
    seen: set[str] = set()
    last_seq: dict[str, int] = {}
    data = path.read_bytes() if path.exists() else b""
    for line in data.splitlines():
        try:
            event = decode_event(line)
        except msgspec.DecodeError:
            out.torn_lines += 1  # a line cut by SIGKILL; its event is redelivered from the outbox
            continue
        if event.id in seen:
            out.redelivered += 1
            continue
        seen.add(event.id)
        owner = event_owner(event)
        assert event.seq > last_seq.get(owner, 0), f"seq of {owner} went back: {event.id} after {last_seq[owner]}"
        last_seq[owner] = event.seq
        out.events.append(event)
    return out


class ChaosRun:
    """One venue, one mode: a simulator, an agent process that comes and goes, and the ledger."""

    def __init__(self, tmp_path: Path, venue: str, mode: str, *, shadow_primary: str = "rest",
                 stdout_sink: bool = False) -> None:
        self.tmp_path = tmp_path
        self.venue = venue
        self.mode = mode
        self.shadow_primary = shadow_primary
        self.stdout_sink = stdout_sink
        self.name = f"{venue}-chaos"
        # generous REST limits: the faults here are injected on purpose, not earned by fast test polling
        self.sim = Simulator(SimulatorConfig(seed=23, position_change_interval_seconds=0,
                                             binance_weight_limit_per_minute=1_000_000))
        self.events_path = tmp_path / "var" / "events.jsonl"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._step = 0
        self._env: dict[str, str] = {}
        self._config: Path | None = None

    async def __aenter__(self) -> ChaosRun:
        eps = await self.sim.start()
        self._env = credentials_env(eps)
        block = custom_exchange(eps, self.venue, mode=self.mode, shadow={"primary": self.shadow_primary},
                                rest={"positions_interval_seconds": 0.15, "prices_interval_seconds": 0.3})
        sinks: list[dict[str, Any]] = [{"type": "jsonl", "path": str(self.events_path), "fsync": "never"}]
        if self.stdout_sink:
            sinks.append({"type": "stdout"})
        self._config = write_config(self.tmp_path, {self.name: block}, sinks=sinks)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        await self.sim.stop()

    # -- the agent -----------------------------------------------------------------------------

    async def start_agent(self, stdout: Any = asyncio.subprocess.DEVNULL) -> None:
        assert self.proc is None or self.proc.returncode is not None
        self.starts += 1
        log = open(self.tmp_path / f"agent-{self.starts}.log", "wb")  # noqa: SIM115 - handed to the child
        self.proc = await asyncio.create_subprocess_exec(
            *feedagent_cmd("run", "-c", str(self._config)), env=self._env, stdout=stdout, stderr=log)
        log.close()

    async def stop_agent(self, *, kill: bool = False, timeout_seconds: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout_seconds)
        if not kill:
            assert code == 0, self.agent_log()
        return code

    def agent_log(self) -> str:
        return (self.tmp_path / f"agent-{self.starts}.log").read_text(errors="replace")[-3000:]

    # -- the market ------------------------------------------------------------------------------

    def change(self, n: int = 1) -> None:
        """``n`` deterministic lifecycle changes: open a flat symbol, resize or close an open one."""
        market = self.sim.market
        symbols = market.symbols(self.venue)
        for _ in range(n):
            self._step += 1
            symbol = symbols[self._step % len(symbols)]
            spec = market.spec(self.venue, symbol)
            held = market.positions(self.venue, symbol)
            if not held:
                market.open_position(self.venue, symbol, "long" if self._step % 2 else "short",
                                     Decimal(spec.qty_step) * (10 + self._step % 7))
            elif self._step % 3 == 0:
                market.close_position(self.venue, symbol, position_idx=held[0].position_idx)
            else:
                market.set_size(self.venue, symbol, held[0].size + Decimal(spec.qty_step),
                                position_idx=held[0].position_idx)

    def true_open_positions(self) -> dict[Key, tuple[str, Decimal]]:
        return {(p.symbol, p.position_idx): (p.side, p.size) for p in self.sim.market.positions(self.venue)}

    # -- checks ----------------------------------------------------------------------------------

    def delivered(self) -> Delivered:
        return read_delivered(self.events_path)

    async def settled(self, timeout_seconds: float = 20.0) -> Delivered:
        """Wait until the consumer's view equals the simulator's open positions."""
        def agrees() -> Delivered | None:
            got = self.delivered()
            return got if got.open_positions() == self.true_open_positions() else None
        try:
            return await eventually(agrees, timeout_seconds=timeout_seconds, interval_seconds=0.05,
                                    what=f"{self.name} to agree with the simulator")
        except AssertionError:
            got = self.delivered()
            raise AssertionError(f"agent view {got.open_positions()} vs simulator {self.true_open_positions()}\n"
                                 f"{self.agent_log()}") from None

    async def check(self, phase: str) -> Delivered:
        """Settle, then compare with the ledger: 0 lost, 0 duplicated."""
        got = await self.settled()
        try:
            assert_same_lifecycle(got.positions(), self.sim, self.venue)
        except AssertionError as exc:
            raise AssertionError(f"after {phase}: {exc}") from None
        return got
