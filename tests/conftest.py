"""Shared fixtures and helpers live in tests/fixtures/, one module for each thing they hold;
a test module imports from there, never from another test module.

Every test that needs a server (a redis-server, the sandbox's HTTP server, worker processes)
is marked ``integration`` here, wherever it lives: ``pytest -m "not integration"`` is the fast
loop (pure logic, fakeredis, respx, in-process CLI runs), ``pytest -m integration`` the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.celery",
    "tests.fixtures.simulation",
    "tests.fixtures.sandbox",
    "tests.fixtures.workers",
    "tests.fixtures.cli",
    "tests.fixtures.rabbitmq",
]

INTEGRATION_DIR = Path(__file__).parent / "integration"
# Fixtures that start or reach a server; a test using one, even through another, needs it.
SERVER_FIXTURES = frozenset({"redis_url", "make_sandbox", "rabbitmq"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if INTEGRATION_DIR in item.path.parents or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)
