"""CNI profiles: what a datapath does where networking/v1 leaves room.

The v1 text exempts one source from isolation: "Traffic is allowed to a pod
if there are no NetworkPolicies selecting the pod OR if the traffic source is
the pod's local node" (kubernetes/api networking/v1/types.go,
NetworkPolicySpec.Ingress). Datapaths implement that exemption differently:
Cilium exempts its local host identity unless ``allow-localhost=policy``; the
AWS agent only the node's primary IP; kube-network-policies only root-owned
sockets. An answer about a kubelet probe is only true for one datapath, so
the engine takes a profile, and every answer names the one it used.

Facts are those of the policy-kinds reference, section 5 (``docs/profiles.md``
repeats them with their upstream sources). Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from drop_explainer.cluster.objects import Node
from drop_explainer.policy.endpoints import SubjectKind

SPEC = "spec"
NAMES = (SPEC, "cilium", "calico", "antrea", "kube-router", "aws-vpc-cni", "kube-network-policies", "ovn-kubernetes")

SETTINGS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "cilium": {"allow-localhost": ("auto", "always", "policy"), "policy-enforcement-mode": ("default", "always"),
               "policy-cidr-match-mode": ("", "nodes")},
}
"""Settings a profile understands, with their accepted values (first = default)."""
_ALIASES = {"enable-policy": "policy-enforcement-mode", "policyEnforcementMode": "policy-enforcement-mode",
            "allowLocalhost": "allow-localhost", "policyCIDRMatchMode": "policy-cidr-match-mode"}

SOURCE_DEFAULTS: Mapping[str, str] = {"hubble": "cilium", "calico-goldmane": "calico", "calico-felix": "calico",
                                      "antrea": "antrea"}
"""A flow source is a CNI's own: its profile is the default when nothing else is known."""

V1_CITATION = ('networking/v1: "Traffic is allowed to a pod if there are no NetworkPolicies selecting the pod OR '
               'if the traffic source is the pod\'s local node" (kubernetes/api networking/v1/types.go, '
               'NetworkPolicySpec.Ingress)')


class ProfileError(ValueError):
    """An unknown profile name or setting; the message lists what is accepted."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str = SPEC
    settings: tuple[tuple[str, str], ...] = ()
    """Only the settings given, sorted; the rest take their defaults."""
    origin: str = "default for an offline what-if"
    """Why this profile applies: --cni, detected from the cluster, the flow source's, or the default."""

    def setting(self, key: str) -> str:
        given = dict(self.settings).get(key)
        return given if given is not None else SETTINGS.get(self.name, {}).get(key, ("",))[0]

    def describe(self) -> str:
        shown = f" ({', '.join(f'{k}={v}' for k, v in self.settings)})" if self.settings else ""
        return f"{self.name}{shown}"

    def sentence(self) -> str:
        """For answers: ``CNI profile: cilium (allow-localhost=policy), set by --cni``."""
        return f"CNI profile: {self.describe()}, {self.origin}"

    @property
    def isolates_every_pod(self) -> bool:
        """Cilium policy-enforcement-mode=always: a pod no policy selects still accepts nothing."""
        return self.name == "cilium" and self.setting("policy-enforcement-mode") == "always"

    def ip_block_blind_to(self, kind: SubjectKind) -> str | None:
        """Why an ipBlock cannot match an end of this kind on this datapath, or None when it can.

        Cilium: "By default, CIDR-based selectors do not match in-cluster entities (pods or nodes)"
        (Documentation/security/policy/layer3.rst; NetworkPolicy ipBlock alike, network/kubernetes/policy.rst);
        policy-cidr-match-mode=nodes makes them match node addresses.
        """
        if self.name != "cilium":
            return None
        if kind is SubjectKind.POD:
            return "on Cilium an ipBlock never matches a Cilium-managed pod; select it by labels"
        nodes = self.setting("policy-cidr-match-mode") == "nodes"
        if kind in (SubjectKind.NODE, SubjectKind.HOST_NETWORK_POD) and not nodes:
            return ("on Cilium an ipBlock does not match a node or its host-network pods unless "
                    "policy-cidr-match-mode=nodes (use fromEntities host/remote-node in a CiliumNetworkPolicy)")
        return None

    def json(self) -> dict[str, object]:
        return {"name": self.name, "settings": dict(self.settings), "origin": self.origin}


@dataclass(frozen=True, slots=True)
class NodeLocal:
    """The answer to "is this traffic from the pod's own node exempt from its ingress isolation?"."""

    node: str
    exempt: bool
    why: str


def parse(text: str, origin: str = "set by --cni") -> Profile:
    """``cilium`` or ``cilium,allow-localhost=policy,policy-enforcement-mode=always``."""
    name, *pairs = [p.strip() for p in text.split(",") if p.strip()] or [""]
    if name not in NAMES:
        raise ProfileError(f"unknown CNI profile {name!r}; known: {', '.join(NAMES)}")
    known = SETTINGS.get(name, {})
    settings: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = _ALIASES.get(key.strip(), key.strip())
        if not eq or key not in known:
            what = f"; it knows {', '.join(sorted(known))}" if known else "; it takes no settings"
            raise ProfileError(f"CNI profile {name}: unknown setting {pair!r}{what}")
        if value.strip() not in known[key]:
            raise ProfileError(f"CNI profile {name}: {key} must be one of {', '.join(known[key])}, got {value!r}")
        settings[key] = value.strip()
    return Profile(name, tuple(sorted(settings.items())), origin)


def choose(configured: str | None = None, *, detected: str | None = None, evidence: str = "",
           source: str | None = None, settings: tuple[tuple[str, str], ...] = ()) -> Profile:
    """--cni first, then the detected enforcer's profile (with the settings read from its config), then the flow
    source's, then ``spec``."""
    if configured:
        return parse(configured)
    if detected and detected != SPEC and detected in NAMES:
        known = SETTINGS.get(detected, {})
        kept = tuple((k, v) for k, v in settings if v in known.get(k, ()))
        return Profile(detected, kept, f"detected from the cluster{f' ({evidence})' if evidence else ''}")
    if source is not None and source in SOURCE_DEFAULTS:
        return Profile(SOURCE_DEFAULTS[source], (), f"default for the {source} flow source")
    return Profile()


def with_origin(profile: Profile, origin: str) -> Profile:
    return replace(profile, origin=origin)


def _primary_ip(node: Node, family: int) -> str | None:
    for kind, addr in node.addresses:
        if kind == "InternalIP" and ipaddress.ip_address(addr).version == family:
            return addr
    return None


def management_port_ips(node: Node) -> tuple[str, ...]:
    """OVN-Kubernetes' ovn-k8s-mp0 address: by its convention the second address of each node subnet."""
    out = []
    for cidr in node.pod_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.num_addresses > 2:
            out.append(str(net.network_address + 2))
    return tuple(out)


def node_local(profile: Profile, node: Node | None, node_name: str, source_ip: str | None) -> NodeLocal:
    """Whether ``profile``'s datapath exempts this source, already known to be the pod's own node."""
    ip = f" ({source_ip})" if source_ip else ""
    who = f"node {node_name}{ip}"
    match profile.name:
        case "cilium":
            if profile.setting("allow-localhost") == "policy":
                return NodeLocal(node_name, False, f"{who} is the pod's own node, but Cilium runs with "
                                 "allow-localhost=policy: traffic from the local host needs a rule allowing the host "
                                 "entity (CiliumNetworkPolicy fromEntities: [host])")
            return NodeLocal(node_name, True, f"{who} is the pod's own node; Cilium allows the local host to reach "
                             "its endpoints under ingress policy (allow-localhost=auto, the default)")
        case "calico":
            return NodeLocal(node_name, True, f"{who} is the pod's own node; Calico allows all connections from "
                             "processes on the host to workloads on that host")
        case "antrea":
            return NodeLocal(node_name, True, f"{who} is the pod's own node; Antrea always allows traffic from a "
                             "Node to the Pods on that Node (NodePort traffic excepted)")
        case "kube-router":
            return NodeLocal(node_name, True, f"{who} is the pod's own node; kube-router accepts traffic whose "
                             "source address is local to the node before any policy chain")
        case "aws-vpc-cni":
            return _aws(node, node_name, source_ip, who)
        case "kube-network-policies":
            return NodeLocal(node_name, True, f"{who} is the pod's own node; kube-network-policies accepts traffic "
                             "from root-owned sockets on the node (the kubelet's probes), while host processes of "
                             "other users are subject to policy")
        case "ovn-kubernetes":
            return _ovn(node, node_name, source_ip, who)
    return NodeLocal(node_name, True, f"{who} is the pod's own node; {V1_CITATION}")


def _aws(node: Node | None, node_name: str, source_ip: str | None, who: str) -> NodeLocal:
    if node is None or source_ip is None:
        return NodeLocal(node_name, True, f"{who} is the pod's own node; the AWS network policy agent allows its "
                         "primary IP (which address this is could not be checked: the node is not in the state)")
    primary = _primary_ip(node, ipaddress.ip_address(source_ip).version)
    if primary == source_ip:
        return NodeLocal(node_name, True, f"{who} is the pod's own node, and its primary IP, which the AWS network "
                         "policy agent always allows")
    return NodeLocal(node_name, False, f"{who} is the pod's own node, but the AWS network policy agent only "
                     f"exempts the node's primary IP ({primary or 'unknown'}), not its other addresses")


def _ovn(node: Node | None, node_name: str, source_ip: str | None, who: str) -> NodeLocal:
    mp = management_port_ips(node) if node is not None else ()
    if source_ip is not None and source_ip in mp:
        return NodeLocal(node_name, True, f"{who} is the management-port address of the pod's own node, which "
                         "OVN-Kubernetes' allow-from-node ACL admits")
    return NodeLocal(node_name, True, f"{who} is the pod's own node; OVN-Kubernetes admits the node's traffic, which "
                     f"reaches local pods from its management port ({', '.join(mp) or 'ovn-k8s-mp0'}) (inference: "
                     "host-to-pod traffic leaves through ovn-k8s-mp0)")
