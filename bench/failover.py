"""Failover time per fault: fault injected -> first REST-sourced event, over repeated runs.

Each run starts a fresh simulator and agent (hybrid mode, rollback on, health checked every
0.25 s with the thresholds below), injects one fault on Bybit and waits for the first mark price
that came from REST. Prints one JSON object with p50/max per fault.

  python bench/failover.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import agent_on_simulator, eventually  # noqa: E402
from tests.integration.test_rollback import FAULTS, ROLLBACK  # noqa: E402


async def one_run(fault: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with agent_on_simulator(Path(tmp), modes={"bybit": "hybrid"}, overrides={"bybit": ROLLBACK}) as (
                agent, log, sim):
            await eventually(agent.is_ready, timeout_seconds=20)
            injected_ms = int(time.time() * 1000)
            for kind, params in FAULTS[fault]:
                sim.faults.inject("bybit", kind, **params)

            def first_rest():
                return next((e for e in log.of_kind("mark_price", "bybit-x")
                             if e.source == "rest" and e.ts_received_ms >= injected_ms), None)
            event = await eventually(first_rest, timeout_seconds=30)
            return (event.ts_received_ms - injected_ms) / 1000


async def main(runs: int) -> dict[str, object]:
    result: dict[str, object] = {"runs": runs, "health": ROLLBACK["health"],
                                 "rest_interval_seconds": ROLLBACK["rest"]["prices_interval_seconds"]}
    for fault in sorted(FAULTS):
        times = [await one_run(fault) for _ in range(runs)]
        result[fault] = {"p50_seconds": round(statistics.median(times), 3), "max_seconds": round(max(times), 3),
                         "all_seconds": [round(t, 3) for t in times]}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import logging
    logging.disable(logging.WARNING)
    print(json.dumps(asyncio.run(main(args.runs))))
