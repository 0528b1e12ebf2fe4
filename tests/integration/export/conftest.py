"""The Collector binary, built once after collection (outside any test's timeout), as tests/harness does.

A cold build takes minutes and would trip pytest-timeout inside the first
test's setup; `make tools` has usually built it already, and then this is
instant. A failed build fails the tests that need it, never skips them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.otelcol_support import CollectorError, build

_BUILT = pytest.StashKey["Path | CollectorError"]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any("otelcol" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    try:
        session.config.stash[_BUILT] = build()
    except CollectorError as exc:
        session.config.stash[_BUILT] = exc


@pytest.fixture(scope="session")
def otelcol(request: pytest.FixtureRequest) -> Path:
    built = request.config.stash.get(_BUILT, None)
    if built is None:
        try:
            built = build()
        except CollectorError as exc:
            built = exc
        request.config.stash[_BUILT] = built
    if isinstance(built, CollectorError):
        pytest.fail(str(built), pytrace=False)
    return built
