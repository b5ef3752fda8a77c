"""Fixtures for the venue adapter tests: payload loaders and tiny loopback HTTP servers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from agent.telemetry.metrics import Metrics
from agent.transport.clock import ManualClock


def _load_root_conftest():
    # Imported by path under its own name: ``from conftest import …`` resolves to
    # whichever conftest.py was imported last once sub-folders have their own.
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("feedagent_tests_root_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ROOT = _load_root_conftest()


@pytest.fixture
def reference_payload():
    """``tests/conftest.py``'s loader of ../shared/reference/payloads (skips when absent)."""
    return _ROOT.reference_payload


@pytest.fixture
def fixture_payload():
    """Loader of the project's own fixtures under tests/fixtures/exchanges/."""
    return lambda name: _ROOT.fixture_payload(f"exchanges/{name}")


@pytest.fixture
def fixture_bytes():
    """Raw bytes of one of the project's own fixtures under tests/fixtures/exchanges/."""
    return lambda name: (_ROOT.FIXTURES / "exchanges" / name).read_bytes()


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
