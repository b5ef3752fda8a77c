"""Soak: a real agent process for a long while, rotations and random faults, checked against the ledger.

One agent process (both venues, hybrid mode, WebSocket rotation every
``--rotate-seconds``) runs against a simulator whose autopilot opens, resizes
and closes positions every ``--change-seconds``. Every ``--fault-seconds`` a
random fault is injected (private stream refused for a few seconds, REST
429/5xx bursts, a silent public socket, Binance listenKey expiry). At the end
the agent stops gracefully and its jsonl output (de-duplicated by id, as a
consumer does) is compared with the simulator's ledger. Prints one JSON object:
lifecycle changes in the ledger vs emitted, lost, duplicated, RSS at start
(after warm-up) and end, task count, event-loop lag p99, redeliveries.

  python bench/soak.py --seconds 1200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.simulator import Simulator, SimulatorConfig  # noqa: E402
from tests.integration.chaos import read_delivered  # noqa: E402
from tests.integration.harness import credentials_env, custom_exchange, feedagent_cmd, write_config  # noqa: E402
from tests.integration.lifecycle import agent_facts, per_key, simulator_facts  # noqa: E402

VENUES = ("bybit", "binance")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback admin URL
        return json.loads(r.read())


def loop_lag_p99_seconds(metrics_text: str) -> float | None:
    """p99 from the cumulative buckets of feedagent_event_loop_lag_seconds."""
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith("feedagent_event_loop_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le for le, count in sorted(buckets) if count >= 0.99 * total)


def compare(events: list[Any], sim: Simulator, venue: str, name: str) -> dict[str, int]:
    """Lost and duplicated opens/closes per position, and positions whose final state differs."""
    mine = per_key(agent_facts([e for e in events if e.exchange == name]))
    theirs = per_key(simulator_facts(sim, venue))
    lost = duplicated = final_mismatch = 0
    for key in set(mine) | set(theirs):
        a = Counter(f[0] for f in mine.get(key, []) if f[0] != "updated")
        s = Counter(f[0] for f in theirs.get(key, []) if f[0] != "updated")
        lost += sum(max(0, s[c] - a[c]) for c in s)
        duplicated += sum(max(0, a[c] - s[c]) for c in a)
        if (mine.get(key) or [None])[-1] != (theirs.get(key) or [None])[-1]:
            final_mismatch += 1
    return {"ledger_changes": sum(len(v) for v in theirs.values()), "lost": lost, "duplicated": duplicated,
            "final_state_mismatches": final_mismatch}


async def soak(seconds: float, rotate_seconds: float, change_seconds: float, fault_seconds: float,
               seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    sim = Simulator(SimulatorConfig(seed=seed, position_change_interval_seconds=change_seconds,
                                    binance_weight_limit_per_minute=1_000_000))
    eps = await sim.start()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        exchanges = {f"{v}-soak": custom_exchange(eps, v, mode="hybrid", ws={"rotate_after_seconds": rotate_seconds},
                                                  rest={"positions_interval_seconds": 0.5,
                                                        "prices_interval_seconds": 1})
                     for v in VENUES}
        events_path = tmp_path / "var" / "events.jsonl"
        cfg = write_config(tmp_path, exchanges,
                           sinks=[{"type": "jsonl", "path": str(events_path), "fsync": "never"}])
        proc = await asyncio.create_subprocess_exec(*feedagent_cmd("run", "-c", str(cfg)), env=credentials_env(eps),
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            runtime = tmp_path / "var" / "agent.json"
            while not runtime.exists():
                await asyncio.sleep(0.1)
            admin = json.loads(runtime.read_text())["admin_url"]
            started = time.monotonic()
            warm_rss: int | None = None
            tasks: list[int] = []
            faults: Counter[str] = Counter()
            next_fault = started + fault_seconds
            while time.monotonic() - started < seconds:
                await asyncio.sleep(1)
                now = time.monotonic()
                if warm_rss is None and now - started >= min(60.0, seconds / 4):
                    warm_rss = rss_bytes(proc.pid)
                if now >= next_fault:
                    next_fault = now + fault_seconds
                    venue = rng.choice(VENUES)
                    kind = rng.choice(["private_down", "rest_burst", "public_silent"]
                                      + (["listen_key_expire"] if venue == "binance" else []))
                    faults[kind] += 1
                    if kind == "private_down":
                        sim.faults.inject(venue, "ws_drop", stream="private", duration_seconds=rng.uniform(1, 5))
                    elif kind == "rest_burst":
                        sim.faults.inject(venue, "rest_error", status=rng.choice([429, 503]), count=rng.randint(1, 5),
                                          **({"retry_after_seconds": 1} if venue == "binance" else {}))
                    elif kind == "public_silent":
                        sim.faults.inject(venue, "ws_silence", stream="market" if venue == "binance" else "public",
                                          duration_seconds=rng.uniform(1, 4))
                    else:
                        sim.faults.inject(venue, "listen_key_expire")
                if int(now - started) % 30 == 0:
                    status = await asyncio.to_thread(get_json, f"{admin}/status")
                    tasks.append(status.get("tasks", -1))
            sim.market.pause()  # let the last changes reach the agent before it stops
            sim.faults.clear()
            await asyncio.sleep(5)
            end_rss = rss_bytes(proc.pid)
            metrics_text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{admin}/metrics", timeout=5)
                                                   .read().decode())
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
            await sim.stop()
        got = read_delivered(events_path)
        positions = got.positions()
        per_venue = {v: compare(positions, sim, v, f"{v}-soak") for v in VENUES}
    growth = None if not warm_rss else round((end_rss - warm_rss) / warm_rss * 100, 2)
    return {
        "seconds": seconds, "rotate_seconds": rotate_seconds, "change_seconds": change_seconds,
        "fault_seconds": fault_seconds, "seed": seed, "exit_code": code, "faults": dict(faults),
        "venues": per_venue,
        "lost": sum(v["lost"] for v in per_venue.values()),
        "duplicated": sum(v["duplicated"] for v in per_venue.values()),
        "redelivered_ids": got.redelivered, "events": len(got.events),
        "rss_after_warmup_bytes": warm_rss, "rss_end_bytes": end_rss, "rss_growth_percent": growth,
        "asyncio_tasks_first_last": [tasks[0], tasks[-1]] if tasks else None, "asyncio_tasks_max": max(tasks or [0]),
        "event_loop_lag_p99_seconds": loop_lag_p99_seconds(metrics_text),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--rotate-seconds", type=float, default=30)
    parser.add_argument("--change-seconds", type=float, default=1.0)
    parser.add_argument("--fault-seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import logging
    logging.disable(logging.WARNING)
    print(json.dumps(asyncio.run(soak(args.seconds, args.rotate_seconds, args.change_seconds,
                                      args.fault_seconds, args.seed))))
