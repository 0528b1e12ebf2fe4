"""Test harness that runs a real etcd + kube-apiserver on loopback.

Why: the daemon's informers, watches, RBAC and 410-Gone handling must be
tested against the real API server, not a fake. See ``apiserver.py`` for the
process management, ``kubelet.py`` for emulating what a kubelet would write,
and ``fixtures.py`` for the pytest plugin (``-p tests.harness.fixtures``).
"""

from tests.harness.apiserver import (
    ADMIN_USER,
    DAEMON_GROUPS,
    DAEMON_NAMESPACE,
    DAEMON_SERVICE_ACCOUNT,
    DAEMON_USER,
    HarnessError,
    KubeApiServer,
    build_binaries,
)

__all__ = [
    "ADMIN_USER",
    "DAEMON_GROUPS",
    "DAEMON_NAMESPACE",
    "DAEMON_SERVICE_ACCOUNT",
    "DAEMON_USER",
    "HarnessError",
    "KubeApiServer",
    "build_binaries",
]
