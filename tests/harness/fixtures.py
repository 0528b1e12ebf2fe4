"""pytest plugin: session-scoped real kube-apiservers for integration tests.

Load it with ``pytest_plugins = ["tests.harness.fixtures"]`` in the root
conftest.py or ``-p tests.harness.fixtures`` on the command line.

Fixtures:
  kube_apiserver                     etcd + kube-apiserver as in production (watch cache on)
  kube_apiserver_without_watch_cache a second pair with --watch-cache=false, where
                                     compact_etcd() alone makes old watches get 410
  kube_apiserver_with_endpoints      a pair whose apiserver maintains default/kubernetes's
                                     Endpoints and EndpointSlice itself (lease reconciler)
  admin_api_client / daemon_api_client  `kubernetes` ApiClients for kube_apiserver

Why a hard failure instead of a skip when the build or start fails: a silent
skip would let CI go green without ever running the integration tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.harness.apiserver import HarnessError, KubeApiServer, build_binaries

ADVERTISED_ADDRESS = "192.0.2.1"
"""What kube_apiserver_with_endpoints advertises (and so writes into default/kubernetes's EndpointSlice)."""

if TYPE_CHECKING:
    from pathlib import Path

    from kubernetes.client import ApiClient

_SERVER_FIXTURES = frozenset({"kube_apiserver", "kube_apiserver_without_watch_cache", "kube_apiserver_with_endpoints"})
_BUILD_KEY = pytest.StashKey["Path | HarnessError"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "apiserver: needs the real etcd + kube-apiserver started by tests/harness (slow first build)",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries once after collection, outside any per-test timeout.

    Why here: a cold build takes minutes and would trip pytest-timeout if it
    ran inside the first test's fixture setup. Only done when a collected test
    needs a server; a failure is stored and reported by the fixture.
    """
    if not any(_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items):
        return
    try:
        session.config.stash[_BUILD_KEY] = build_binaries()
    except HarnessError as exc:
        session.config.stash[_BUILD_KEY] = exc


def _bin_dir(config: pytest.Config) -> Path:
    built = config.stash.get(_BUILD_KEY, None)
    if built is None:  # fixture requested dynamically (getfixturevalue): build now
        try:
            built = build_binaries()
        except HarnessError as exc:
            built = exc
        config.stash[_BUILD_KEY] = built
    if isinstance(built, HarnessError):
        pytest.fail(f"building kube-apiserver/etcd failed:\n{built}", pytrace=False)
    return built


def _serve(config: pytest.Config, workdir: Path, *, watch_cache: bool,
           extra_args: tuple[str, ...] = ()) -> Iterator[KubeApiServer]:
    server = KubeApiServer(_bin_dir(config), workdir, watch_cache=watch_cache, extra_apiserver_args=extra_args)
    try:
        server.start()
    except HarnessError as exc:
        pytest.fail(f"starting etcd/kube-apiserver failed:\n{exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube_apiserver(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """etcd + kube-apiserver on 127.0.0.1 for the whole session (watch cache on, as in production).

    Shared by all tests: use unique namespaces/names, and remember that
    restart_apiserver()/expire_resource_versions() cut every open watch.
    """
    yield from _serve(pytestconfig, tmp_path_factory.mktemp("kube-apiserver"), watch_cache=True)


@pytest.fixture(scope="session")
def kube_apiserver_without_watch_cache(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeApiServer]:
    """A separate pair with --watch-cache=false: every watch reads etcd directly.

    Why: compact_etcd() then deterministically turns old-resourceVersion
    watches into 410 Gone without a restart. Note: no BOOKMARK events here.
    """
    yield from _serve(pytestconfig, tmp_path_factory.mktemp("kube-apiserver-nocache"), watch_cache=False)


@pytest.fixture(scope="session")
def kube_apiserver_with_endpoints(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeApiServer]:
    """A pair whose kube-apiserver keeps default/kubernetes's Endpoints and EndpointSlice, as in a cluster.

    Why a separate server: the shared one runs --endpoint-reconciler-type=none,
    because 127.0.0.1 is not a valid endpoint address. Here the apiserver
    advertises ADVERTISED_ADDRESS (TEST-NET-1, never routed; it still binds
    127.0.0.1 only) and its lease reconciler writes that address and its
    secure port into the EndpointSlice, exactly as it does on a real control plane.
    """
    yield from _serve(pytestconfig, tmp_path_factory.mktemp("kube-apiserver-endpoints"), watch_cache=True,
                      extra_args=(f"--advertise-address={ADVERTISED_ADDRESS}", "--endpoint-reconciler-type=lease"))


@pytest.fixture
def admin_api_client(kube_apiserver: KubeApiServer) -> Iterator[ApiClient]:
    """A `kubernetes` ApiClient authenticated as cluster admin (system:masters)."""
    api = kube_apiserver.admin_api_client()
    try:
        yield api
    finally:
        KubeApiServer.close_api_client(api)


@pytest.fixture
def daemon_api_client(kube_apiserver: KubeApiServer) -> Iterator[ApiClient]:
    """A `kubernetes` ApiClient authenticated as the daemon's ServiceAccount identity."""
    api = kube_apiserver.daemon_api_client()
    try:
        yield api
    finally:
        KubeApiServer.close_api_client(api)
