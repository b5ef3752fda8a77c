"""A key rotated at the venue and in its secret file: a reload picks it up, and so does the next auth failure."""

from __future__ import annotations

import contextlib

import aiohttp
import pytest

from agent.simulator import Simulator, SimulatorConfig
from tests.integration.harness import custom_exchange, eventually, running_agent, write_config

# bybit in hybrid: the private WebSocket authenticates with the key; binance in rest: every poll is signed
CASES = [("bybit", "hybrid"), ("binance", "rest")]


def _write_secret(path, value: str) -> None:
    """Replace a secret file atomically, as a Kubernetes Secret volume or a deploy tool does."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(value + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


@contextlib.asynccontextmanager
async def _agent_with_secret_files(tmp_path, venue: str, mode: str):
    sim = Simulator(SimulatorConfig(seed=7, position_change_interval_seconds=0))
    eps = await sim.start()
    try:
        files = {what: tmp_path / f"{venue}.{what}" for what in ("api_key", "api_secret")}
        for what, path in files.items():
            _write_secret(path, getattr(getattr(eps, venue), what))
        block = custom_exchange(eps, venue, mode=mode)
        block["credentials"] = {f"{what}_file": str(path) for what, path in files.items()}
        name = f"{venue}-x"
        async with running_agent(write_config(tmp_path, {name: block}), environ={}) as (agent, log):
            await eventually(agent.is_ready, what="ready")
            yield agent, log, sim, name, files
    finally:
        await sim.stop()


def _rereads(agent, name: str) -> dict:
    return agent.status()["exchanges"][name]["secret_rereads"]


def _opened(log, name: str, symbol: str) -> bool:
    return any(e.symbol == symbol and e.change == "opened" for e in log.positions(name))


@pytest.mark.parametrize(("venue", "mode"), CASES)
async def test_a_reload_picks_up_a_rotated_secret_file(tmp_path, venue, mode):
    async with _agent_with_secret_files(tmp_path, venue, mode) as (agent, log, sim, name, files):
        new_secret = "rotated" + "0" * 29
        sim.rotate_credentials(venue, api_secret=new_secret)  # the venue refuses the old secret from now on
        # the agent read the file again after the first auth failure: still the old secret there
        await eventually(lambda: (_rereads(agent, name)["last"] or {}).get("outcome") == "unchanged",
                         what="secret re-read after the auth failure")
        sim.market.open_position(venue, "SOLUSDT", "long", "3")

        _write_secret(files["api_secret"], new_secret)  # well within the 30 s until the next re-read
        result = await agent.reload("test")

        assert result["changes"] == {name: "credentials"}
        await eventually(lambda: _opened(log, name, "SOLUSDT"), what="positions flow again")
        assert agent.pipelines[name].mode == mode
        assert _rereads(agent, name)["count"] == 1
        assert new_secret not in str(agent.status())


@pytest.mark.parametrize(("venue", "mode"), CASES)
async def test_an_auth_failure_reads_a_rotated_secret_file_without_a_reload(tmp_path, venue, mode):
    async with _agent_with_secret_files(tmp_path, venue, mode) as (agent, log, sim, name, files):
        new_key, new_secret = "K" * len(files["api_key"].read_text().strip()), "S" * 36
        _write_secret(files["api_key"], new_key)
        _write_secret(files["api_secret"], new_secret)
        async with aiohttp.ClientSession() as http:  # as an on-call drill does it: through the control API
            resp = await http.post(f"{sim.endpoints.control_url}/credentials/{venue}",
                                   json={"api_key": new_key, "api_secret": new_secret})
            assert resp.status == 200, await resp.text()
        sim.market.open_position(venue, "SOLUSDT", "short", "2")

        await eventually(lambda: _opened(log, name, "SOLUSDT"), what="positions flow again")
        assert _rereads(agent, name)["last"]["outcome"] == "rotated"
        assert agent.last_reload is None, "no reload was needed"
        assert agent.pipelines[name].mode == mode
