"""Shared test fixtures: a fresh DuckDB connection per test and deterministic hypothesis runs."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from alirecon.formats.engine import new_connection

settings.register_profile(
    "alirecon",
    deadline=None,
    derandomize=True,
    max_examples=int(os.environ.get("ALIRECON_HYPOTHESIS_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("alirecon")


@pytest.fixture
def con():
    c = new_connection()
    yield c
    c.close()
