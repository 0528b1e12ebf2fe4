"""Shared test fixtures: where the repository and the shared reference data are."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real kube-apiserver + etcd fixture (built from their Go modules, cached).
pytest_plugins = ["tests.harness.fixtures"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder that sits beside the checkout (fixtures from public sources)."""
    path = REPO.parent / "shared"
    if not (path / "fixtures").is_dir():
        pytest.fail(f"shared fixtures not found beside the checkout at {path}")
    return path
