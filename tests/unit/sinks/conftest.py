"""Fixtures for sink tests; the builders live in sink_fixtures so tests can import their types."""

from __future__ import annotations

import pytest
from sink_fixtures import FakeClock, MakeDrop, build_explanation, drop_factory

from drop_explainer.explain.model import Explanation


@pytest.fixture(scope="session")
def explanation() -> Explanation:
    return build_explanation()


@pytest.fixture
def make_drop(explanation: Explanation) -> MakeDrop:
    return drop_factory(explanation)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
