"""Shared fixtures live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.celery",
    "tests.fixtures.sandbox",
    "tests.fixtures.workers",
]
