"""Fixtures for the venue adapter tests: payload loaders and tiny loopback HTTP servers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest



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
