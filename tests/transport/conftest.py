"""Fixtures for the REST transport tests: fresh metrics, a manual clock, loopback HTTP servers."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.clock import ManualClock


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def clock() -> ManualClock:
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
