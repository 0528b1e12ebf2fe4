"""Identical drops grouped, so a retransmit storm reads as one line with a count.

Identical means: same source workload, destination pod, port, protocol and
direction. The group keeps the explanation of its first flow; the state is
one snapshot, so every flow of a group would get the same answer anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from drop_explainer.cluster import workloads
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.explain.explaining import UnexplainableFlow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Endpoint, Flow, Verdict
from drop_explainer.policy.engine import Engine

Signature = tuple[str, str, int, str, str]
_EXPLAINED = (Verdict.DROPPED, Verdict.AUDIT)


def workload_of(ep: Endpoint, state: ClusterState) -> str:
    """namespace/workload for a pod (cluster/workloads.py: the Deployment, not the ReplicaSet), else the address."""
    if ep.namespace and ep.pod:
        pod = state.pods.get(f"{ep.namespace}/{ep.pod}")
        if pod is not None:
            return workloads.of_pod(pod).key
        return workloads.of_gone_pod(ep.namespace, ep.pod, ep.labels, ep.workload).key
    if ep.namespace and ep.pod_prefix:
        pods = state.pods_by_namespace.get(ep.namespace, ())
        owner = workloads.of_prefix(ep.namespace, ep.pod_prefix, ep.labels, pods)
        return owner.key if owner is not None else f"{ep.namespace}/{ep.pod_prefix}*"
    return ep.ip or str(ep.kind)


def destination_of(ep: Endpoint) -> str:
    """namespace/pod, the pod itself (per-pod metrics and the store's affected pod keep it)."""
    if ep.namespace and ep.pod:
        return f"{ep.namespace}/{ep.pod}"
    if ep.namespace and ep.pod_prefix:
        return f"{ep.namespace}/{ep.pod_prefix}*"
    return ep.ip or str(ep.kind)


def signature(flow: Flow, state: ClusterState) -> Signature:
    return (workload_of(flow.source, state), destination_of(flow.destination), flow.destination_port or 0,
            flow.protocol.value, flow.direction.value)


@dataclass(slots=True)
class DropGroup:
    signature: Signature
    explanation: Explanation
    first_ns: int
    last_ns: int
    flows: int = 0
    packets: int = 0
    connections: int = 0
    nodes: set[str] = field(default_factory=set)

    def add(self, flow: Flow) -> None:
        self.flows += 1
        self.packets += flow.packets
        self.connections += flow.connections
        self.first_ns = min(self.first_ns, flow.time_ns)
        self.last_ns = max(self.last_ns, flow.time_ns)
        if flow.node:
            self.nodes.add(flow.node)


@dataclass(slots=True)
class Grouped:
    groups: list[DropGroup]
    unexplainable: list[str]
    """One reason per dropped flow that names no connection (kept, not hidden)."""
    other_verdicts: int = 0


def group_drops(engine: Engine, flows: Iterable[Flow], cache: ExplanationCache | None = None) -> Grouped:
    """Dropped (and audit) flows grouped by signature, in order of first appearance."""
    cache = cache or ExplanationCache()
    groups: dict[Signature, DropGroup] = {}
    out = Grouped([], [])
    for flow in flows:
        if flow.verdict not in _EXPLAINED:
            out.other_verdicts += 1
            continue
        sig = signature(flow, engine.state)
        group = groups.get(sig)
        if group is None:
            try:
                expl = cache.explain(engine, flow)
            except UnexplainableFlow as exc:
                out.unexplainable.append(str(exc))
                continue
            group = groups[sig] = DropGroup(sig, expl, flow.time_ns, flow.time_ns)
        group.add(flow)
    out.groups = list(groups.values())
    return out
