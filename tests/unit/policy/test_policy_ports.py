"""Port clauses: protocols, numbers, ranges and named ports.

Each case isolates a destination for ingress with one rule admitting every
source on the case's ``ports`` list, then asks about one port and protocol.
"""

from __future__ import annotations

import pytest

from tests.unit.policy.world import ask, netpol, state_with


def _ingress_ports(namespace: str, ports: str) -> str:
    return netpol(namespace, f"{{podSelector: {{}}, ingress: [{{ports: {ports}}}]}}")


@pytest.mark.parametrize(
    ("ports", "destination", "port", "protocol", "allowed"),
    [
        pytest.param("[{port: 8080}]", "backend/api", 8080, "TCP", True, id="protocol-defaults-to-tcp"),
        pytest.param("[{port: 8080}]", "backend/api", 8080, "UDP", False, id="default-tcp-excludes-udp"),
        pytest.param("[{port: 8080}]", "backend/api", 8081, "TCP", False, id="other-number"),
        pytest.param("[{protocol: UDP, port: 53}]", "backend/api", 53, "UDP", True, id="udp"),
        pytest.param("[{protocol: UDP, port: 53}]", "backend/api", 53, "TCP", False, id="udp-excludes-tcp"),
        pytest.param("[{protocol: SCTP, port: 9090}]", "backend/api", 9090, "SCTP", True, id="sctp"),
        pytest.param("[{protocol: SCTP, port: 9090}]", "backend/api", 9090, "TCP", False, id="sctp-excludes-tcp"),
        pytest.param("[{port: 80}, {protocol: UDP, port: 53}]", "backend/api", 53, "UDP", True,
                     id="several-entries-any-matches"),
        pytest.param("[{port: 8000, endPort: 8080}]", "backend/api", 8000, "TCP", True, id="range-start-inclusive"),
        pytest.param("[{port: 8000, endPort: 8080}]", "backend/api", 8080, "TCP", True, id="range-end-inclusive"),
        pytest.param("[{port: 8000, endPort: 8080}]", "backend/api", 8081, "TCP", False, id="range-past-end"),
        pytest.param("[{port: 8000, endPort: 8080}]", "backend/api", 7999, "TCP", False, id="range-before-start"),
        pytest.param("[{port: 8000, endPort: 8080}]", "backend/api", 8050, "UDP", False, id="range-keeps-protocol"),
        pytest.param("[{protocol: UDP}]", "backend/api", 1234, "UDP", True, id="protocol-only-all-its-ports"),
        pytest.param("[{protocol: UDP}]", "backend/api", 1234, "TCP", False, id="protocol-only-that-protocol"),
        pytest.param("[{}]", "backend/api", 8080, "TCP", True, id="empty-entry-is-all-tcp-ports"),
        pytest.param("[{}]", "backend/api", 53, "UDP", False, id="empty-entry-is-tcp-only"),
        pytest.param("[]", "backend/api", 4242, "SCTP", True, id="empty-ports-list-all-ports-and-protocols"),
        pytest.param("[{port: http}]", "backend/api", 8080, "TCP", True, id="named-port-on-destination"),
        pytest.param("[{port: http}]", "backend/api", 80, "TCP", False,
                     id="named-port-not-the-number-it-means-elsewhere"),
        pytest.param("[{port: metrics}]", "backend/api", 9090, "TCP", True, id="named-port-default-protocol"),
        pytest.param("[{protocol: UDP, port: dns}]", "backend/api", 53, "UDP", True,
                     id="named-port-in-second-container"),
        pytest.param("[{port: dns}]", "backend/api", 53, "TCP", False, id="named-port-defined-for-other-protocol"),
        pytest.param("[{port: pg}]", "backend/api", 5432, "TCP", False, id="named-port-missing-on-this-pod"),
        pytest.param("[{port: pg}]", "backend/db", 5432, "TCP", True, id="named-port-present-on-that-pod"),
    ],
)
def test_ports_admit_matching_protocol_and_port(
    ports: str, destination: str, port: int, protocol: str, allowed: bool
) -> None:
    """Protocol defaults to TCP; numbers, inclusive ranges and named ports of the destination pod."""
    verdict = ask(state_with(_ingress_ports("backend", ports)), "frontend/web", destination, port, protocol)
    assert verdict.ingress.isolated
    assert verdict.ingress.allowed is allowed


@pytest.mark.parametrize(
    ("ports", "destination", "port", "protocol", "allowed"),
    [
        pytest.param("[{port: http}]", "frontend/web", 80, "TCP", True, id="web-defines-http-as-tcp-80"),
        pytest.param("[{port: http}]", "frontend/cache", 8080, "TCP", False, id="cache-defines-http-as-udp"),
        pytest.param("[{port: http}]", "frontend/cache", 8080, "UDP", False, id="tcp-rule-never-admits-udp"),
        pytest.param("[{protocol: UDP, port: http}]", "frontend/cache", 8080, "UDP", True, id="udp-rule-for-udp-http"),
        pytest.param("[{protocol: UDP, port: http}]", "frontend/web", 80, "UDP", False,
                     id="udp-rule-on-pod-with-tcp-http"),
    ],
)
def test_named_ports_match_only_pods_defining_them_with_that_protocol(
    ports: str, destination: str, port: int, protocol: str, allowed: bool
) -> None:
    """The same name can mean different ports and protocols on different pods."""
    verdict = ask(state_with(_ingress_ports("frontend", ports)), "backend/api", destination, port, protocol)
    assert verdict.ingress.allowed is allowed


@pytest.mark.parametrize(
    ("destination", "port", "allowed"),
    [
        pytest.param("backend/api", 8080, True, id="resolved-on-the-destination-pod"),
        pytest.param("backend/api", 80, False, id="not-on-the-source-pod"),
        pytest.param("backend/db", 8080, False, id="destination-without-the-name"),
        pytest.param("ops/agent", 8080, False, id="host-network-pod-is-not-a-pod-for-names"),
        pytest.param("172.18.0.12", 8080, False, id="node-has-no-named-ports"),
        pytest.param("203.0.113.9", 80, False, id="outside-has-no-named-ports"),
    ],
)
def test_egress_named_ports_resolve_against_the_destination(destination: str, port: int, allowed: bool) -> None:
    """An egress rule's named port means the destination pod's port of that name."""
    policy = netpol("frontend", "{podSelector: {matchLabels: {app: web}}, egress: [{ports: [{port: http}]}]}")
    verdict = ask(state_with(policy), "frontend/web", destination, port)
    assert verdict.egress.isolated
    assert verdict.egress.allowed is allowed
