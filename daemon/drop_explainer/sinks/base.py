"""The record every sink receives, and the one method a sink has.

A sink's handle() is synchronous and cheap: anything slow (Kubernetes
Events, disk) is queued to the sink's own task, so one slow or failing sink
never holds up the others or the flow stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.grouping import destination_of, workload_of
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Flow


@dataclass(frozen=True, slots=True)
class DropSignature:
    """What makes two drops "the same drop" for history, alerts and Events."""

    source_workload: str
    """namespace/workload of the source (cluster/workloads.py), or an address."""
    destination: str
    """namespace/workload of a pod destination, or an address for one that is not a pod.

    Workloads, not pods: a rollout or a new replica of a Deployment keeps its signatures."""
    port: int
    protocol: str
    direction: str
    policies: tuple[str, ...]
    """namespace/name of the policies that deny, sorted."""
    traps: tuple[str, ...]
    affected: str = field(default="", compare=False)
    """namespace/pod the drop happened to (the destination for ingress, the source pod for egress),
    kept beside the signature, not part of it: replicas of one workload share a signature."""
    id: str = field(init=False, compare=False)
    """A short stable id for URLs (/drops/{id}) and Event dedup; computed once, it is read per flow."""

    def __post_init__(self) -> None:
        text = "|".join([self.source_workload, self.destination, str(self.port), self.protocol, self.direction,
                         ",".join(self.policies), ",".join(self.traps)])
        object.__setattr__(self, "id", hashlib.sha256(text.encode()).hexdigest()[:16])

    @property
    def destination_namespace(self) -> str | None:
        ns, sep, _ = self.destination.partition("/")
        return ns if sep else None

    @property
    def affected_workload(self) -> str:
        """namespace/workload the drop happened to (the destination for ingress, the source for egress)."""
        return self.source_workload if self.direction == "egress" else self.destination


def denying_direction(expl: Explanation, flow: Flow) -> str:
    """The flow's own direction when it has one, else the engine's denying side."""
    if flow.direction.value in ("ingress", "egress"):
        return flow.direction.value
    if not expl.verdict.egress.allowed:
        return "egress"
    return "ingress"


def signature_of(flow: Flow, expl: Explanation, state: ClusterState) -> DropSignature:
    direction = denying_direction(expl, flow)
    side = expl.verdict.ingress if direction == "ingress" else expl.verdict.egress
    # A side allowed only by the node-local exemption the CNI did not apply: its isolating policies decided the drop.
    policies = tuple(sorted(p.key for p in side.policies)) if not side.allowed or side.node_exempt else ()
    return DropSignature(
        source_workload=workload_of(flow.source, state),
        destination=workload_of(flow.destination, state),
        port=flow.destination_port or 0,
        protocol=flow.protocol.value,
        direction=direction,
        policies=policies,
        traps=tuple(t.id for t in expl.traps),
        affected=destination_of(flow.source if direction == "egress" else flow.destination),
    )


@dataclass(frozen=True, slots=True)
class ExplainedDrop:
    flow: Flow
    explanation: Explanation
    signature: DropSignature
    new: bool = False
    """True the first time this signature is ever seen (set by the drop store)."""


class Sink(Protocol):
    def handle(self, drop: ExplainedDrop) -> None:
        """Take one explained drop; must not block and should not raise."""
