"""A Service as a destination: port -> targetPort per backend, each ready backend judged, "k of n" said.

Policies see the packet after Service translation (the backend's address and targetPort), so the answer
about a Service is the answers about its backends; a Service without backends says so.
"""

from __future__ import annotations

import pytest

from drop_explainer import cli
from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import rendering, services
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine

WORLD = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: shop}}
- {kind: Namespace, metadata: {name: web}}
- kind: Node
  metadata: {name: n1}
  spec: {podCIDRs: [10.1.1.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
- kind: Pod
  metadata: {name: api-1, namespace: shop, labels: {app: api}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
  status: {phase: Running, podIP: 10.1.1.11, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: api-2, namespace: shop, labels: {app: api, role: canary}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}
  status: {phase: Running, podIP: 10.1.1.12, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: api-3, namespace: shop, labels: {app: api}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{name: metrics, containerPort: 9100}]}]}
  status: {phase: Running, podIP: 10.1.1.13, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: api-old, namespace: shop, labels: {app: api}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
  status: {phase: Succeeded, podIP: 10.1.1.14, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: front, namespace: web, labels: {app: front}}
  spec: {nodeName: n1, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.1.1.20, hostIP: 192.168.0.1}
- kind: Service
  metadata: {name: api, namespace: shop}
  spec:
    selector: {app: api}
    clusterIP: 10.96.1.1
    clusterIPs: [10.96.1.1, "fd00::1"]
    ports: [{name: http, port: 80, targetPort: http}]
- kind: Service
  metadata: {name: canary, namespace: shop}
  spec: {selector: {role: canary}, clusterIP: 10.96.1.2, ports: [{port: 80, targetPort: http}]}
- kind: Service
  metadata: {name: headless, namespace: shop}
  spec: {selector: {role: canary}, clusterIP: None, ports: [{port: 9090, targetPort: 9090}]}
- kind: Service
  metadata: {name: empty, namespace: shop}
  spec: {selector: {app: nothing}, clusterIP: 10.96.1.3, ports: [{port: 80, targetPort: 8080}]}
- kind: Service
  metadata: {name: sliced, namespace: shop}
  spec: {selector: {app: api}, clusterIP: 10.96.1.4, ports: [{name: http, port: 80, targetPort: http}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: sliced-abc, namespace: shop, labels: {kubernetes.io/service-name: sliced}}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - {addresses: [10.1.1.11], conditions: {ready: true}, targetRef: {kind: Pod, name: api-1, namespace: shop}}
  - {addresses: [10.1.1.12], conditions: {ready: false}, targetRef: {kind: Pod, name: api-2, namespace: shop}}
- kind: NetworkPolicy
  metadata: {name: canary-from-shop-only, namespace: shop}
  spec:
    podSelector: {matchLabels: {role: canary}}
    ingress: [{from: [{podSelector: {}}]}]
"""

STATE = ClusterState.build(parse_documents("world", WORLD))


def _ask(to: str, port: int | str | None = None, src: str = "web/front") -> Explanation:
    engine = Engine(STATE)
    query = queries.Query(src, to, port if port is not None else 9090 if "headless" in to else 80)
    return services.explain(engine, queries.connection(STATE, query))


@pytest.mark.parametrize(
    ("to", "allowed", "k", "n", "denied"),
    [
        pytest.param("svc/shop/api", False, 1, 2, ["shop/api-2"], id="one-of-two-backends-denies"),
        pytest.param("shop/api", False, 1, 2, ["shop/api-2"], id="namespace-slash-name-when-no-such-pod"),
        pytest.param("10.96.1.1", False, 1, 2, ["shop/api-2"], id="cluster-ip"),
        pytest.param("fd00::1", False, 1, 2, ["shop/api-2"], id="second-cluster-ip"),
        pytest.param("service/shop/canary", False, 0, 1, ["shop/api-2"], id="every-backend-denies"),
        pytest.param("svc/shop/sliced", True, 1, 1, [], id="endpointslices-only-ready-backends"),
        pytest.param("svc/shop/headless", False, 0, 1, ["shop/api-2"], id="headless-service"),
    ],
)
def test_a_service_is_judged_at_each_ready_backend(to: str, allowed: bool, k: int, n: int,
                                                   denied: list[str]) -> None:
    """The answer is allowed only if every backend allows it, and says "k of n", naming the denied ones."""
    expl = _ask(to)
    assert expl.service is not None
    assert services.allowed(expl) is allowed
    assert (expl.service.allowed_count, len(expl.service.backends)) == (k, n)
    assert [b.pod for b in expl.service.backends if not b.allowed] == denied
    assert f"allowed to {k} of {n} backend(s)" in expl.headline
    assert expl.headline.startswith("ALLOWED" if allowed else ("DENIED" if k == 0 else "PARTLY DENIED"))
    for name in denied:
        assert name in expl.headline


def test_named_target_ports_are_resolved_per_backend() -> None:
    """targetPort http is 8080 on api-1 and 9090 on api-2; api-3 has no port http and is no backend."""
    expl = _ask("svc/shop/api")
    assert expl.service is not None
    assert [(b.pod, b.port) for b in expl.service.backends] == [("shop/api-1", 8080), ("shop/api-2", 9090)]
    assert any("shop/api-3 defines no TCP port named http" in n for n in expl.notes)
    # The explanation shown is the denied backend's, on its own targetPort: a packet policies really see.
    assert expl.connection.destination.pod is not None
    assert expl.connection.destination.pod.key == "shop/api-2"
    assert expl.connection.port == 9090
    assert expl.fixes
    assert all(f.verified for f in expl.fixes)


def test_endpointslices_decide_readiness_and_the_port() -> None:
    """A not-ready endpoint receives no connection; the slice's port is the backend's."""
    expl = _ask("svc/shop/sliced")
    assert expl.service is not None
    assert expl.service.source_of_backends == "EndpointSlices"
    assert [(b.pod, b.port) for b in expl.service.backends] == [("shop/api-1", 8080)]
    assert any("1 endpoint(s) of the EndpointSlices are not ready" in n for n in expl.notes)


def test_a_service_without_backends_says_so() -> None:
    """No ready backend: the connection fails whatever the policies say, and the answer is not "allowed"."""
    expl = _ask("svc/shop/empty")
    assert expl.headline.startswith("NO BACKENDS web/front -> service shop/empty TCP/80")
    assert not services.allowed(expl)
    assert rendering.explanation_json(expl)["allowed"] is False


def test_a_service_port_that_does_not_exist_is_a_bad_query() -> None:
    """Asking for port 443 of a Service that only has 80 is refused, listing its ports."""
    with pytest.raises(queries.BadQuery, match="has no TCP port 443; its ports: 80/TCP"):
        _ask("svc/shop/api", 443)


def test_the_service_port_can_be_named() -> None:
    """port=http is the Service's port named http (80), then translated per backend."""
    expl = _ask("svc/shop/api", "http")
    assert expl.service is not None
    assert expl.service.port == 80


def test_a_dropped_flow_to_a_service_address_is_explained_through_its_backends() -> None:
    """A flow still addressed to the cluster IP is judged at the backends, like a what-if."""
    flow = Flow(1, Verdict.DROPPED, Endpoint(EndpointKind.POD, "10.1.1.20", "web", "front", {"app": "front"}),
                Endpoint(EndpointKind.UNKNOWN, "10.96.1.2"), destination_port=80, drop_kind=DropKind.POLICY_DENIED,
                direction=Direction.INGRESS, tcp_flags=frozenset({"SYN"}))
    expl = explain_flow(Engine(STATE), flow)
    assert expl.service is not None
    assert expl.service.service == "shop/canary"
    assert expl.headline.startswith("DENIED web/front -> service shop/canary TCP/80")
    assert expl.agreement.agrees is True


def test_the_demo_service_ip_is_not_allowed_when_its_backend_denies() -> None:
    """Reproduction: whatif from frontend/pod-a to 10.96.20.20:80 (Service backend/backend) used to say ALLOWED."""
    engine = Engine(load_state(cli.example_state_path()))
    conn = queries.connection(engine.state, queries.Query("frontend/pod-a", "10.96.20.20", 80))
    expl = services.explain(engine, conn)
    assert not services.allowed(expl)
    assert expl.headline.startswith("DENIED frontend/pod-a -> service backend/backend TCP/80 (targetPort http)")
    assert "allowed to 0 of 1 backend(s); denied at backend/pod-b: ingress of backend/pod-b is isolated by " \
           "backend/default-deny" in expl.headline
    assert expl.connection.port == 8080


def test_a_headless_service_says_its_clients_dial_the_pods() -> None:
    """No cluster IP: the answer still judges the pods, and says they are reached directly."""
    expl = _ask("svc/shop/headless")
    assert any("shop/headless is headless" in n for n in expl.notes)
