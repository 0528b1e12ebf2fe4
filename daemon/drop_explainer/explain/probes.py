"""The kubelet-probe trap, on evidence only, and a fix that fits the CNI.

networking/v1 exempts the pod's own node from ingress isolation, and most
datapaths do too, so "the policy blocks the kubelet's probe" is usually
false. The trap fires only where there is evidence: an observed drop from
the destination's own node to one of its declared probe ports (the CNI
dropped what the spec exempts), or a what-if under a profile that does not
exempt the node. A probe from another node is no kubelet probe at all.

The fix must survive the pod moving: every node's address (or the node
CIDR), never one node's /32; on Cilium an ipBlock does not match the host
identity at all, so the fix is ``fromEntities: [host]`` or the agent setting.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from drop_explainer.cluster.objects import IPBlock, NetworkPolicy, Peer, Pod, PolicyPort, PolicyType, Rule
from drop_explainer.explain import blast, manifests
from drop_explainer.explain.model import Fix, PolicyTrace
from drop_explainer.flows.model import DropKind, EndpointKind, Flow, Verdict
from drop_explainer.policy.endpoints import SubjectKind
from drop_explainer.policy.engine import Connection, Engine, local_node

TRAP_ID = "kubelet-probe"

_LIKELY: dict[str, str] = {
    "cilium": "on Cilium, allow-localhost=policy (the host then needs fromEntities: [host]), or "
              "policy-enforcement-mode=always on a pod no ingress rule selects (cilium/cilium#48444)",
    "calico": "Calico exempts the local host, so look for a HostEndpoint (auto host endpoints have broken probes, "
              "projectcalico/calico#4478) or a Calico policy kind the engine does not evaluate",
    "antrea": "Antrea always exempts the node; traffic SNATed to the gateway (NodePort) is not exempt",
    "kube-router": "kube-router exempts only source addresses it sees as local (probes from the kube-bridge IP, "
                   "cloudnativelabs/kube-router#1017; IPv6-primary dual-stack on k3s, k3s-io/k3s#10030)",
    "aws-vpc-cni": "the AWS network policy agent exempts only the node's primary IP",
    "kube-network-policies": "kube-network-policies exempts only root-owned sockets (skipSkuidBypass turns that off)",
    "ovn-kubernetes": "OVN-Kubernetes exempts only the node's management-port address",
    "spec": "e.g. Cilium with allow-localhost=policy or policy-enforcement-mode=always; the AWS agent exempts only "
            "the node's primary IP; kube-network-policies only root-owned sockets",
}


def probe_ports(pod: Pod) -> Iterator[tuple[int, str]]:
    """(port number, "container liveness httpGet port http") for probes that cross the network."""
    for c in pod.containers:
        for probe in c.probes:
            if probe.port is None or probe.handler == "exec":
                continue
            number = probe.port if isinstance(probe.port, int) else next(
                (p.container_port for p in c.ports if p.name == probe.port), None)
            if number is None:
                continue
            shown = f"{probe.port}" if isinstance(probe.port, int) else f"{probe.port} (= {number})"
            yield number, f"container {c.name} {probe.kind} probe ({probe.handler} port {shown})"


def _observed_drop(flow: Flow | None) -> bool:
    return flow is not None and flow.verdict is Verdict.DROPPED and \
        flow.drop_kind in (DropKind.POLICY_DENIED, DropKind.POLICY_DENY)


def own_node(engine: Engine, conn: Connection, flow: Flow | None) -> str | None:
    """The destination's node when the source is it (Hubble's host identity is the reporting node's own)."""
    found = local_node(engine.state, conn, engine.profile)
    if found is not None:
        return found[1]
    dst = conn.destination.pod
    if flow is not None and dst is not None and flow.source.kind is EndpointKind.HOST and flow.node \
            and flow.node == dst.node_name:
        return flow.node
    return None


def node_addresses(engine: Engine) -> list[str]:
    """Every node's InternalIP as a host route, in node order."""
    out = []
    for node in sorted(engine.state.nodes.values(), key=lambda n: n.name):
        for kind, addr in node.addresses:
            if kind == "InternalIP":
                out.append(f"{addr}/{ipaddress.ip_address(addr).max_prefixlen}")
    return out


def _covering(cidrs: list[str]) -> str | None:
    """The smallest single network holding every address (it may hold more than the nodes: say so)."""
    nets = [ipaddress.ip_network(c) for c in cidrs]
    if not nets or len({n.version for n in nets}) != 1:
        return None
    net = nets[0]
    while not all(n.subnet_of(net) for n in nets):  # type: ignore[arg-type]
        net = net.supernet()
    return str(net)


def cilium_policy(pod: Pod, port: int) -> str:
    """The CiliumNetworkPolicy admitting the local host on the probe port, as one line of YAML for kubectl apply."""
    from drop_explainer.explain import fixes  # fixes imports the traps, which import this module

    labels = ", ".join(f"{k}: {v}" for k, v in fixes.workload_selector(pod).match_labels)
    return (f"{{apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {{name: allow-host-probes, namespace: "
            f"{pod.namespace}}}, spec: {{endpointSelector: {{matchLabels: {{{labels}}}}}, ingress: [{{fromEntities: "
            f"[host], toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]}}]}}}}")


def fix_text(engine: Engine, pod: Pod, port: int) -> str:
    exec_hint = " Or make it an exec probe, which runs in the container and never crosses the network."
    if engine.profile.name == "cilium":
        return (f"Fix on Cilium: a CiliumNetworkPolicy allowing the host entity, {cilium_policy(pod, port)}, or run "
                "the agent with allow-localhost=always (the default); a NetworkPolicy ipBlock does not match the host "
                "identity unless policy-cidr-match-mode=nodes." + exec_hint)
    addrs = node_addresses(engine)
    cover = _covering(addrs)
    where = ", ".join(addrs) or "(no node addresses in the state)"
    net = f", or the node CIDR (e.g. {cover}, which may hold other addresses too)" if cover and len(addrs) > 1 else ""
    return (f"Fix: admit every node's address on TCP {port} (ipBlock peers {where}{net}), never one node's /32: the "
            "pod moves between nodes." + exec_hint)


def kubelet_probe(engine: Engine, conn: Connection, flow: Flow | None) -> Iterator[str]:
    """The detail of the trap, when the evidence is there (at most one)."""
    dst = conn.destination.pod
    if dst is None or not conn.destination.is_pod or conn.protocol != "TCP":
        return
    node = own_node(engine, conn, flow)
    if node is None:
        return
    probe = next((what for number, what in probe_ports(dst) if number == conn.port), None)
    if probe is None:
        return
    head = f"{conn.source.ip or conn.source.describe()} is {dst.key}'s own node {node}, from which the kubelet runs " \
        f"the {probe}"
    ingress = engine.evaluate(conn).ingress
    local = ingress.node_local
    if _observed_drop(flow):
        likely = _LIKELY.get(engine.profile.name, _LIKELY["spec"])
        yield (f"{head}; networking/v1 exempts traffic from the pod's local node, yet the CNI dropped it. Likely "
               f"setting: {likely}. {fix_text(engine, dst, conn.port)}")
    elif flow is None and not ingress.allowed and local is not None and not local.exempt:
        yield f"{head}; under CNI profile {engine.profile.describe()}: {local.why}. {fix_text(engine, dst, conn.port)}"


def other_node_note(engine: Engine, conn: Connection) -> str | None:
    """A node (or host process) that is not the pod's asking for a probe port: say where the probes come from."""
    dst = conn.destination.pod
    src = conn.source
    if dst is None or not conn.destination.is_pod or src.kind not in (SubjectKind.NODE, SubjectKind.HOST_NETWORK_POD):
        return None
    if own_node(engine, conn, None) is not None or not any(n == conn.port for n, _ in probe_ports(dst)):
        return None
    where = src.node.name if src.node is not None else (src.pod.node_name if src.pod is not None else None)
    return (f"{src.ip} is {'node ' + where if where else 'a node address'}, not {dst.key}'s own node "
            f"{dst.node_name or '(unknown)'}: the kubelet probes the pod from its own node, which networking/v1 "
            "exempts; traffic from other nodes is judged by the rules like any other address")


def node_fix(engine: Engine, conn: Connection, traces: tuple[PolicyTrace, ...], *, radius: bool = True) -> Fix | None:
    """For a non-Cilium profile: add every node's address to the closest ingress policy, checked by the engine."""
    if engine.profile.name == "cilium":
        return None
    ingress = [t for t in traces if t.direction == "ingress"]
    addrs = node_addresses(engine)
    if not ingress or not addrs:
        return None
    policy: NetworkPolicy = ingress[0].policy
    rule = Rule(tuple(Peer(ip_block=IPBlock(a)) for a in addrs), (PolicyPort("TCP", conn.port),))
    edited = replace(policy, ingress=(*policy.ingress, rule), policy_types_explicit=True)
    after = Engine(engine.state.derive(policies=(edited,)), engine.profile)
    verified = after.evaluate(conn).allowed
    doc = manifests.policy_json(edited)
    fix = Fix("add-rule", f"add ingress rule {len(policy.ingress)} to {policy.key} admitting every node's address "
              f"({', '.join(addrs)}) on TCP {conn.port}", "kubectl apply -f - <<'EOF'\n" + manifests.to_yaml(doc)
              + "EOF\n", (doc,), verified=verified)
    if not verified or not radius:
        return fix
    change = _Change(((edited, PolicyType.INGRESS, rule),))
    return replace(fix, blast_radius=blast.blast_radius(engine, after, conn, [change]))


@dataclass(frozen=True, slots=True)
class _Change:
    """What the blast radius reads of a change: the rules that may admit something new."""

    effective: tuple[tuple[NetworkPolicy, PolicyType, Rule], ...]
    labels: tuple[tuple[str, Mapping[str, str]], ...] = ()


def _one_node(fix: Fix, ip: str) -> bool:
    """Does this fix admit the source by a host route of its own address (in its objects or its command)?"""
    cidr = f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}"
    for obj in fix.objects:
        spec = obj.get("spec")
        rules = spec.get("ingress", ()) if isinstance(spec, Mapping) else ()
        for rule in rules:
            if any(p.get("ipBlock", {}).get("cidr") == cidr for p in rule.get("from", ())):
                return True
    return f"cidr: {cidr}" in fix.apply or f'"cidr": "{cidr}"' in fix.apply


def with_node_fix(engine: Engine, conn: Connection, traces: tuple[PolicyTrace, ...],
                  plan: tuple[Fix, ...], *, radius: bool = True) -> tuple[Fix, ...]:
    """The plan with its one-node ipBlock fix replaced (or, on Cilium, dropped: an ipBlock cannot match the host)."""
    src = conn.source.ip
    if src is None:
        return plan
    one_node = tuple(f for f in plan if _one_node(f, src))
    if not one_node:
        return plan
    kept = tuple(f for f in plan if f not in one_node)
    better = node_fix(engine, conn, traces, radius=radius)
    return (*kept, better) if better is not None else kept
