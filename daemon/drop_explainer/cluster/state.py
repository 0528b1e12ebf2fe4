"""An immutable snapshot of the cluster, indexed the ways explanations look things up.

A snapshot never changes once built: the engine and its caches can hold one
without locks, and a what-if "with this fix applied" is a new snapshot that
shares every unchanged object with the old one.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from drop_explainer.cluster import objects as o
from drop_explainer.policy.model import CompiledPolicy, RefusedPolicy

if TYPE_CHECKING:
    from drop_explainer.cluster.enforcer import Detection, NotEvaluated

_generations = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """The objects, plus lookups by name, namespace and address."""

    namespaces: Mapping[str, o.Namespace]
    pods: Mapping[str, o.Pod]
    nodes: Mapping[str, o.Node]
    services: Mapping[str, o.Service]
    policies: Mapping[str, o.NetworkPolicy]
    endpoint_slices: Mapping[str, o.EndpointSlice] = field(default_factory=dict)
    """discovery.k8s.io/v1 EndpointSlices, when the state has them (a Service's ready backends)."""
    generation: int = field(default_factory=lambda: next(_generations))
    """Distinct for every snapshot built; caches key on it."""
    enforcer: Detection | None = None
    """Which component enforces policy (cluster/enforcer.py); None = not detected, nothing is said."""
    not_evaluated: tuple[NotEvaluated, ...] = ()
    """Policy objects of kinds loaded but not evaluated (Antrea-native): every answer names them."""
    compiled: Mapping[str, CompiledPolicy] = field(default_factory=dict)
    """Policies of other kinds (CiliumNetworkPolicy, ...) compiled into the rule model (policy/model.py)."""
    refused: tuple[RefusedPolicy, ...] = ()
    """Objects their kind's validation rejects: no effect at all; named and counted."""
    pods_by_namespace: Mapping[str, tuple[o.Pod, ...]] = field(init=False)
    policies_by_namespace: Mapping[str, tuple[o.NetworkPolicy, ...]] = field(init=False)
    pod_by_ip: Mapping[str, o.Pod] = field(init=False)
    node_by_ip: Mapping[str, o.Node] = field(init=False)
    service_by_ip: Mapping[str, o.Service] = field(init=False)
    pods_by_name: Mapping[str, tuple[o.Pod, ...]] = field(init=False)
    services_by_namespace: Mapping[str, tuple[o.Service, ...]] = field(init=False)
    slices_by_service: Mapping[str, tuple[o.EndpointSlice, ...]] = field(init=False)
    """NAMESPACE/SERVICE -> its EndpointSlices."""
    pod_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(init=False)
    compiled_by_namespace: Mapping[str | None, tuple[CompiledPolicy, ...]] = field(init=False)
    """Compiled policies by namespace; None holds the cluster-wide ones."""

    def __post_init__(self) -> None:
        by_ns: dict[str, list[o.Pod]] = defaultdict(list)
        by_name: dict[str, list[o.Pod]] = defaultdict(list)
        by_ip: dict[str, o.Pod] = {}
        for pod in self.pods.values():
            by_ns[pod.namespace].append(pod)
            by_name[pod.name].append(pod)
            # A host-network pod shares its node's address: the datapath sees
            # the node, so the address must resolve to the node, not the pod.
            if not pod.host_network and pod.phase not in ("Succeeded", "Failed"):
                for ip in pod.ips:
                    by_ip[ip] = pod
        pol_ns: dict[str, list[o.NetworkPolicy]] = defaultdict(list)
        for pol in self.policies.values():
            pol_ns[pol.namespace].append(pol)
        node_ip = {addr: n for n in self.nodes.values() for kind, addr in n.addresses if kind.endswith("IP")}
        svc_ip = {ip: s for s in self.services.values() for ip in s.cluster_ips}
        svc_ns: dict[str, list[o.Service]] = defaultdict(list)
        for svc in self.services.values():
            svc_ns[svc.namespace].append(svc)
        nets = tuple(ipaddress.ip_network(c, strict=False) for n in self.nodes.values() for c in n.pod_cidrs)
        object.__setattr__(self, "pods_by_namespace", {k: tuple(v) for k, v in by_ns.items()})
        object.__setattr__(self, "pods_by_name", {k: tuple(v) for k, v in by_name.items()})
        object.__setattr__(self, "policies_by_namespace", {k: tuple(v) for k, v in pol_ns.items()})
        object.__setattr__(self, "pod_by_ip", by_ip)
        object.__setattr__(self, "node_by_ip", node_ip)
        object.__setattr__(self, "service_by_ip", svc_ip)
        object.__setattr__(self, "services_by_namespace", {k: tuple(v) for k, v in svc_ns.items()})
        object.__setattr__(self, "pod_networks", nets)
        by_svc: dict[str, list[o.EndpointSlice]] = defaultdict(list)
        for sl in self.endpoint_slices.values():
            if sl.service:
                by_svc[f"{sl.namespace}/{sl.service}"].append(sl)
        object.__setattr__(self, "slices_by_service", {k: tuple(v) for k, v in by_svc.items()})
        by_scope: dict[str | None, list[CompiledPolicy]] = defaultdict(list)
        for cp in self.compiled.values():
            by_scope[cp.namespace].append(cp)
        object.__setattr__(self, "compiled_by_namespace", {k: tuple(v) for k, v in by_scope.items()})

    @classmethod
    def build(cls, objs: Iterable[object]) -> ClusterState:
        """A snapshot from parsed objects of any of the six watched kinds."""
        ns: dict[str, o.Namespace] = {}
        pods: dict[str, o.Pod] = {}
        nodes: dict[str, o.Node] = {}
        svcs: dict[str, o.Service] = {}
        pols: dict[str, o.NetworkPolicy] = {}
        slices: dict[str, o.EndpointSlice] = {}
        compiled: dict[str, CompiledPolicy] = {}
        refused: dict[str, RefusedPolicy] = {}
        for obj in objs:
            match obj:
                case o.Namespace():
                    ns[obj.name] = obj
                case o.Pod():
                    pods[obj.key] = obj
                case o.Node():
                    nodes[obj.name] = obj
                case o.Service():
                    svcs[obj.key] = obj
                case o.NetworkPolicy():
                    pols[obj.key] = obj
                case o.EndpointSlice():
                    slices[obj.key] = obj
                case CompiledPolicy():
                    compiled[obj.key] = obj
                    refused.pop(obj.key, None)
                case RefusedPolicy():
                    refused[obj.key] = obj
                    compiled.pop(obj.key, None)
                case _:
                    raise TypeError(f"not a cluster object: {type(obj).__name__}")
        # Namespaces referenced but not listed still exist for the selectors
        # that match on kubernetes.io/metadata.name, as the API server sets it.
        named = {p.namespace for p in pods.values()} | {p.namespace for p in pols.values()}
        for name in named | {c.namespace for c in compiled.values() if c.namespace is not None}:
            ns.setdefault(name, o.Namespace(name, {"kubernetes.io/metadata.name": name}))
        return cls(ns, pods, nodes, svcs, pols, slices, compiled=compiled, refused=tuple(refused.values()))

    def with_objects(self, *objs: object) -> ClusterState:
        """A new snapshot with these objects added or replacing their namesakes."""
        built = ClusterState.build([*self.namespaces.values(), *self.pods.values(), *self.nodes.values(),
                                    *self.services.values(), *self.policies.values(),
                                    *self.endpoint_slices.values(), *self.compiled.values(), *self.refused,
                                    *objs])
        return built.with_enforcer(self.enforcer).with_not_evaluated(self.not_evaluated)

    def with_enforcer(self, detection: Detection | None) -> ClusterState:
        """The same snapshot (same indexes) with the enforcer attached; a new generation, so caches notice."""
        return self if detection == self.enforcer else self._with_fact("enforcer", detection)

    def with_not_evaluated(self, objects: tuple[NotEvaluated, ...]) -> ClusterState:
        """The same snapshot with the not-evaluated policy objects attached (a new generation)."""
        return self if objects == self.not_evaluated else self._with_fact("not_evaluated", objects)

    def _with_fact(self, name: str, value: object) -> ClusterState:
        new = object.__new__(ClusterState)
        for f in fields(ClusterState):
            object.__setattr__(new, f.name, getattr(self, f.name))
        object.__setattr__(new, name, value)
        object.__setattr__(new, "generation", next(_generations))
        return new

    def with_namespace_labels(self, name: str, labels: Mapping[str, str]) -> ClusterState:
        ns = self.namespaces.get(name) or o.Namespace(name)
        return self.with_objects(replace(ns, labels={**ns.labels, **labels}))

    def derive(
        self,
        *,
        policies: Iterable[o.NetworkPolicy] = (),
        namespaces: Iterable[o.Namespace] = (),
    ) -> ClusterState:
        """Like with_objects for policies and namespaces, without re-indexing pods.

        Checking a fix re-evaluates the state with one policy or label
        changed; rebuilding every index of 5,000 pods for that would cost
        more than the whole explanation.
        """
        pols = dict(self.policies)
        pol_ns = dict(self.policies_by_namespace)
        for pol in policies:
            pols[pol.key] = pol
            pol_ns[pol.namespace] = (*(p for p in pol_ns.get(pol.namespace, ()) if p.name != pol.name), pol)
        nss = dict(self.namespaces)
        for ns in namespaces:
            nss[ns.name] = ns
        new = object.__new__(ClusterState)
        for f in fields(ClusterState):
            object.__setattr__(new, f.name, getattr(self, f.name))
        object.__setattr__(new, "policies", pols)
        object.__setattr__(new, "policies_by_namespace", pol_ns)
        object.__setattr__(new, "namespaces", nss)
        object.__setattr__(new, "generation", next(_generations))
        return new

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        ns = self.namespaces.get(name)
        return ns.labels if ns is not None else {"kubernetes.io/metadata.name": name}

    def in_pod_network(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.pod_networks)
