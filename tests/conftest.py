"""Shared test fixtures: reference payloads, external tools, the simulator."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.clock import ManualClock

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_PAYLOADS = REPO_ROOT.parent / "shared" / "reference" / "payloads"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def require_tool(name: str) -> str:
    """Path of an external tool; skip when missing, fail instead under FEEDAGENT_REQUIRE_TOOLS=1."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("FEEDAGENT_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{name} is required (FEEDAGENT_REQUIRE_TOOLS=1) but not on PATH")
    pytest.skip(f"{name} is not installed; .ci/run installs it")


def reference_payload(name: str):
    """Load ``../shared/reference/payloads/<name>``; skip when that folder is absent."""
    path = REFERENCE_PAYLOADS / name
    if not REFERENCE_PAYLOADS.is_dir():
        pytest.skip("../shared/reference/payloads is not present")
    return json.loads(path.read_text())


def fixture_payload(name: str):
    """Load one of the project's own fixtures from tests/fixtures/."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def metrics() -> Metrics:
    """A Metrics instance on its own registry (one registry per test)."""
    return Metrics(CollectorRegistry())


@pytest.fixture
def clock() -> ManualClock:
    """A clock moved by hand: bans, resets and offsets without sleeping."""
    return ManualClock(wall_s=1_732_100_000.0)


@pytest.fixture
async def serve():
    """Start an aiohttp app on 127.0.0.1 with an ephemeral port; returns its base URL."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()
