"""``feedagent simulate``: run the simulator until SIGINT/SIGTERM, announcing its URLs on stdout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from agent.simulator.config import SimulatorConfig
from agent.simulator.server import Simulator


async def run_standalone(host: str = "127.0.0.1", port: int = 0, config: SimulatorConfig | None = None) -> None:
    """Start, print ``endpoints.to_json()`` as one line on stdout, run until a signal or cancellation."""
    sim = Simulator(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    try:
        endpoints = await sim.start(host=host, port=port)
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not available off the main thread or on some platforms; cancellation still works there.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        sys.stdout.write(endpoints.to_json() + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await sim.stop()
