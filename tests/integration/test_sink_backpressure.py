"""`feedagent run | consumer-that-stopped-reading`: the agent keeps serving, other sinks keep writing, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess

import aiohttp

from agent.core.events import coalesce_key, decode_event
from tests.integration.harness import eventually, exchange_block, feedagent_cmd, read_runtime, write_config

BACKLOGGED = re.compile(r'^feedagent_sink_backlogged\{sink="stdout"\} 1\.0$', re.M)


def line_count(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def answers(http: aiohttp.ClientSession, url: str) -> str:
    """The body of a GET that must answer promptly (a blocked event loop would not)."""
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
        assert resp.status == 200, url
        return await resp.text()


async def test_a_stdout_reader_that_stops_reading_blocks_nothing_else(tmp_path):
    # Arrange: stdout goes to a pipe that nobody reads; the read end stays open so writes block, not fail
    var = tmp_path / "var"
    events_file = var / "events.jsonl"
    exchanges = {"bybit-sim": exchange_block("bybit"), "binance-sim": exchange_block("binance")}
    cfg = write_config(tmp_path, exchanges,
                       sinks=[{"type": "stdout", "queue_size": 50},
                              {"type": "jsonl", "path": str(events_file), "fsync": "never"}],
                       simulator={"position_change_interval_seconds": 0.2, "initial_positions_per_venue": 4})
    read_fd, write_fd = os.pipe()
    with open(tmp_path / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(feedagent_cmd("run", "-c", str(cfg)), stdout=write_fd, stderr=stderr)
    os.close(write_fd)
    try:
        admin = read_runtime(var)["admin_url"]
        async with aiohttp.ClientSession() as http:
            # Act + Assert: the stdout sink backlogs while the agent stays responsive
            async def backlogged() -> bool:
                await answers(http, f"{admin}/-/healthy")
                return bool(BACKLOGGED.search(await answers(http, f"{admin}/metrics")))

            await eventually(backlogged, timeout_seconds=60, interval_seconds=0.2, what="stdout backlogged")
            status = await (await http.get(f"{admin}/status")).json()
            assert status["sinks"]["stdout"]["state"] == "backlogged"
            assert status["sinks"]["jsonl-1"]["state"] == "ok"
            written = line_count(events_file)
            await eventually(lambda: line_count(events_file) > written + 20, timeout_seconds=20,
                             what="the jsonl sink keeps receiving events")
            for path in ("/-/healthy", "/metrics", "/status"):
                await answers(http, f"{admin}{path}")
        # Act: stop while stdout is still stuck
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_fd)
    # Assert: a clean exit, and what stdout never took is kept on disk for the next start
    assert returncode == 0, (tmp_path / "stderr.log").read_text()[-2000:]
    spooled = [decode_event(line) for line in (var / "spool" / "stdout.jsonl").read_bytes().splitlines()]
    assert spooled, "the unwritten stdout events stay in its spool"
    file_ids = {e.id for e in (decode_event(line) for line in events_file.read_bytes().splitlines())}
    assert {e.id for e in spooled} <= file_ids, "the spool holds events the agent really published"
    assert all(coalesce_key(e) is None for e in spooled), "only lifecycle events are kept"
