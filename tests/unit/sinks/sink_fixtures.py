"""Explained drops for sink tests, built from one small cluster state (helpers; fixtures in conftest).

Every drop shares one real explanation (api/default-deny at resourceVersion
7 denies web -> api); the signature and flow vary per test, which is all the
sinks look at besides rendering the explanation.
"""

from __future__ import annotations

from typing import Protocol

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.flows.model import Protocol as L4
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks.base import DropSignature, ExplainedDrop

T0 = 1_764_122_280_000_000_000
"""A flow time on a minute boundary (2025-11-26T01:58:00Z), so minute buckets line up with the tests."""
MINUTE = 60_000_000_000

STATE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: web, labels: {kubernetes.io/metadata.name: web}}}
- {kind: Namespace, metadata: {name: api, labels: {kubernetes.io/metadata.name: api}}}
- kind: Pod
  metadata: {name: pod-a, namespace: web, labels: {app: frontend}}
  spec: {containers: [{name: c}]}
  status: {phase: Running, podIP: 10.0.1.1}
- kind: Pod
  metadata: {name: pod-b, namespace: api, labels: {app: backend}}
  spec: {containers: [{name: s, ports: [{containerPort: 8080}]}]}
  status: {phase: Running, podIP: 10.0.2.1}
- kind: NetworkPolicy
  metadata: {name: default-deny, namespace: api, resourceVersion: "7"}
  spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def endpoint(where: str) -> Endpoint:
    """ "ns/pod" is a pod; "world", "host"... is that kind of non-pod end."""
    ns, sep, pod = where.partition("/")
    if sep:
        return Endpoint(EndpointKind.POD, None, ns, pod)
    return Endpoint(EndpointKind(where), "203.0.113.9")


class MakeDrop(Protocol):
    def __call__(self, *, source: str = ..., destination: str = ..., port: int = ..., direction: str = ...,
                 policies: tuple[str, ...] = ..., traps: tuple[str, ...] = ..., time_ns: int = ...,
                 node: str | None = ..., packets: int = ..., connections: int = ..., drop_kind: DropKind = ...,
                 new: bool = ...) -> ExplainedDrop: ...


def build_explanation() -> Explanation:
    """The one real explanation every test drop carries."""
    engine = Engine(ClusterState.build(parse_documents("state", STATE)))
    flow = Flow(T0, Verdict.DROPPED, Endpoint(EndpointKind.POD, "10.0.1.1", "web", "pod-a"),
                Endpoint(EndpointKind.POD, "10.0.2.1", "api", "pod-b"), L4.TCP, 40000, 8080, node="n1",
                drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS, tcp_flags=frozenset({"SYN"}))
    return explain_flow(engine, flow)


def drop_factory(explanation: Explanation) -> MakeDrop:
    """A factory: one dropped flow and the signature the pipeline would give it."""

    def make(*, source: str = "web/pod-a", destination: str = "api/pod-b", port: int = 8080,
             direction: str = "ingress", policies: tuple[str, ...] = ("api/default-deny",),
             traps: tuple[str, ...] = (), time_ns: int = T0, node: str | None = "n1", packets: int = 1,
             connections: int = 1, drop_kind: DropKind = DropKind.POLICY_DENIED, new: bool = False) -> ExplainedDrop:
        flow = Flow(time_ns, Verdict.DROPPED, endpoint(source), endpoint(destination), L4.TCP, 40000, port,
                    node=node, drop_kind=drop_kind, direction=Direction(direction), packets=packets,
                    connections=connections, origin="hubble")
        sig = DropSignature(source, destination, port, "TCP", direction, policies, traps)
        return ExplainedDrop(flow, explanation, sig, new)

    return make


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
