"""Which component enforces NetworkPolicy in this cluster, read from the API.

A NetworkPolicy is only a wish: the API server stores it whatever the
network does, and plain flannel (or a kube-proxy-only cluster) ignores it.
An explanation that says "denied" there sends the on-call engineer after
the wrong cause, so the daemon first finds out who enforces policy.

The signals are the read-only ones of the policy-kinds reference, section 6:
DaemonSets (and their containers and arguments), CRDs, node annotations and
kubelet versions, and a few ConfigMap keys. None alone is proof; the
result says what it rests on (``evidence``) and whether it is ``certain``,
and prefers "unknown" to a guess. Only a live test (a deny-all policy
against a throwaway pod) proves enforcement; we never run one.

``detect`` is pure over an ``Inventory`` (raw API objects), so a recorded
cluster state can be replayed in tests; ``fetch_inventory`` reads the same
lists from a live API server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from drop_explainer.cluster.unevaluated import KINDS_NOT_EVALUATED, NotEvaluated, not_evaluated

Json = Mapping[str, Any]

NONE: Final = "none"
"""Enforcer name when a network was recognised and nothing in it enforces policy."""
UNKNOWN: Final = "unknown"

# Enforcer -> the CNI profile name the policy engine applies (policy/profiles.py names).
PROFILE_OF: Final[Mapping[str, str]] = {
    "cilium": "cilium", "calico": "calico", "canal": "calico", "antrea": "antrea",
    "kube-router": "kube-router", "k3s": "kube-router", "kube-network-policies": "kube-network-policies",
    "aws-vpc-cni": "aws-vpc-cni", NONE: "spec", UNKNOWN: "spec",
}

_CILIUM_NEVER: Final = "never"
__all__ = ["KINDS_NOT_EVALUATED", "NotEvaluated", "not_evaluated"]  # re-exported (unevaluated.py)


INVENTORY_KINDS: Final = frozenset({"DaemonSet", "Deployment", "CustomResourceDefinition", "Node", "ConfigMap"})
"""Kinds detection reads."""
WORKLOAD_KINDS: Final = frozenset({"DaemonSet", "CustomResourceDefinition"})
"""A saved state with none of these cannot tell who enforces policy (nodes alone say too little)."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """The raw API objects detection reads (each a list of JSON objects as the API returns them)."""

    daemonsets: Sequence[Json] = ()
    deployments: Sequence[Json] = ()
    crds: Sequence[Json] = ()
    nodes: Sequence[Json] = ()
    configmaps: Sequence[Json] = ()
    """Only the few that matter: cilium-config, antrea-config (kube-system or the CNI's namespace)."""

    @classmethod
    def from_objects(cls, objects: Iterable[Json]) -> Inventory:
        """Sort a mixed list (e.g. ``kubectl get ds,deploy,crd,nodes,cm -A -o json``) by kind."""
        by_kind: dict[str, list[Json]] = {}
        for obj in objects:
            by_kind.setdefault(str(obj.get("kind") or ""), []).append(obj)
        return cls(daemonsets=by_kind.get("DaemonSet", []), deployments=by_kind.get("Deployment", []),
                   crds=by_kind.get("CustomResourceDefinition", []), nodes=by_kind.get("Node", []),
                   configmaps=by_kind.get("ConfigMap", []))


@dataclass(frozen=True, slots=True)
class Detection:
    """Who enforces policy, how sure we are, and why."""

    enforcer: str
    """cilium, calico, canal, antrea, aws-vpc-cni, kube-router, k3s, kube-network-policies, none or unknown."""
    profile: str
    """The CNI profile name this implies (PROFILE_OF)."""
    certain: bool
    """False when the signals are indirect (CRDs only), conflict, or nothing was recognised."""
    network: str = ""
    """The network (CNI) recognised, when it is not the enforcer itself (flannel, kindnet...)."""
    evidence: tuple[str, ...] = ()
    """What the answer rests on, for people ("DaemonSet kube-system/cilium")."""
    also: tuple[str, ...] = field(default=())
    """Other enforcers seen (policy-only modes, leftovers)."""
    settings: tuple[tuple[str, str], ...] = ()
    """Profile settings read from the CNI's own configuration (cilium-config: allow-localhost...), sorted."""

    @property
    def enforces(self) -> bool | None:
        """True if a component enforces policy, False if none does, None if we cannot tell."""
        if self.enforcer == NONE:
            return False
        if self.enforcer == UNKNOWN:
            return None
        return True

    def summary(self) -> str:
        """One line for /readyz and the CLI's state summary."""
        sure = "" if self.certain else " (uncertain)"
        if self.enforcer == NONE:
            net = self.network or "this cluster's network"
            return f"policy enforcer: none{sure}: {net} does not enforce NetworkPolicy"
        if self.enforcer == UNKNOWN:
            return "policy enforcer: unknown (uncertain): no known policy enforcer recognised"
        return f"policy enforcer: {self.enforcer}{sure} (profile {self.profile})"

    def not_enforced_note(self) -> str | None:
        """The sentence that leads every answer when nothing enforces policy, else None."""
        if self.enforcer != NONE:
            return None
        net = self.network or "network"
        hedge = "" if self.certain else " (as far as we can tell from the cluster's objects)"
        return (f"NetworkPolicy objects exist, but this cluster's network ({net}) does not enforce them{hedge}: "
                "this connection is not blocked by policy.")


# --- reading objects --------------------------------------------------------------


def meta(obj: Json) -> Json:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _name(obj: Json) -> str:
    return str(meta(obj).get("name") or "")


def _where(obj: Json) -> str:
    ns = meta(obj).get("namespace")
    return f"{ns}/{_name(obj)}" if ns else _name(obj)


def _labels(obj: Json) -> Mapping[str, str]:
    labels = meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _containers(workload: Json) -> list[Json]:
    spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    out: list[Json] = []
    for key in ("initContainers", "containers"):
        out.extend(c for c in spec.get(key) or () if isinstance(c, Mapping))
    return out


def _args(container: Json) -> list[str]:
    return [str(a) for a in (container.get("command") or [])] + [str(a) for a in (container.get("args") or [])]


def _flag(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name=value`` (or ``--name value``; bare ``--name`` is "true"), last one wins."""
    value: str | None = None
    for i, arg in enumerate(args):
        if arg == f"--{name}":
            nxt = args[i + 1] if i + 1 < len(args) else ""
            value = nxt if nxt and not nxt.startswith("-") else "true"
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _configmap(inv: Inventory, name: str) -> Mapping[str, str] | None:
    for cm in inv.configmaps:
        if _name(cm) == name:
            data = cm.get("data")
            return data if isinstance(data, Mapping) else {}
    return None


def crd_groups(inv: Inventory) -> set[str]:
    return {str((crd.get("spec") or {}).get("group") or _name(crd).partition(".")[2]) for crd in inv.crds}


# --- the rules -----------------------------------------------------------------------


@dataclass(slots=True)
class _Findings:
    enforcers: dict[str, list[str]] = field(default_factory=dict)
    """Enforcer -> evidence, for workloads found running."""
    hints: dict[str, list[str]] = field(default_factory=dict)
    """Enforcer -> evidence that is indirect (CRDs, annotations without a workload)."""
    disabled: dict[str, list[str]] = field(default_factory=dict)
    """Enforcers present but configured not to enforce."""
    networks: dict[str, list[str]] = field(default_factory=dict)
    """Non-enforcing networks recognised (flannel, kindnet)."""
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    """Enforcer -> profile settings read from its configuration."""

    def add(self, table: dict[str, list[str]], name: str, why: str) -> None:
        table.setdefault(name, []).append(why)


def _workloads(inv: Inventory, f: _Findings) -> None:
    for ds in inv.daemonsets:
        name, labels, where = _name(ds), _labels(ds), f"DaemonSet {_where(ds)}"
        containers = _containers(ds)
        cnames = {str(c.get("name") or "") for c in containers}
        if name == "cilium" or labels.get("k8s-app") == "cilium":
            _cilium(inv, f, where)
        elif name == "canal" or {"calico-node", "kube-flannel"} <= cnames:
            f.add(f.enforcers, "canal", f"{where} (calico-node with kube-flannel)")
        elif name == "calico-node" or "calico-node" in cnames:
            f.add(f.enforcers, "calico", where)
        elif name == "antrea-agent" or labels.get("component") == "antrea-agent":
            f.add(f.enforcers, "antrea", where)
        elif name == "aws-node" or "aws-eks-nodeagent" in cnames:
            _aws(containers, f, where)
        elif name == "kube-router" or labels.get("k8s-app") == "kube-router":
            _kube_router(containers, f, where)
        elif name == "kube-network-policies" or labels.get("app") == "kube-network-policies":
            f.add(f.enforcers, "kube-network-policies", where)
        elif "kube-network-policies" in cnames:
            f.add(f.enforcers, "kube-network-policies", f"{where}: container kube-network-policies")
            if _flannel_ds(name, labels):
                f.add(f.networks, "flannel", where)
        elif _flannel_ds(name, labels):
            f.add(f.networks, "flannel", where)
        elif name == "kindnet" or labels.get("app") == "kindnet":
            f.add(f.networks, "kindnet", where)
    for dep in inv.deployments:
        if _name(dep) == "antrea-controller":
            f.add(f.hints, "antrea", f"Deployment {_where(dep)}")
        elif _name(dep) == "cilium-operator":
            f.add(f.hints, "cilium", f"Deployment {_where(dep)}")


def _flannel_ds(name: str, labels: Mapping[str, str]) -> bool:
    return name.startswith("kube-flannel") or labels.get("app") == "flannel"


def _cilium(inv: Inventory, f: _Findings, where: str) -> None:
    config = _configmap(inv, "cilium-config") or {}
    mode = str(config.get("enable-policy") or "default").lower()
    if mode == _CILIUM_NEVER:
        f.add(f.disabled, "cilium", f"{where}, cilium-config enable-policy=never")
        return
    why = where + (", cilium-config policy-audit-mode=true (drops are only audited)"
                   if str(config.get("policy-audit-mode") or "").lower() == "true" else "")
    f.add(f.enforcers, "cilium", why)
    f.settings["cilium"] = _cilium_settings(config)


# cilium-config key -> (profile setting, values the profile knows); other values are left to the default.
_CILIUM_SETTINGS: Final = {"allow-localhost": ("allow-localhost", ("always", "policy")),
                           "enable-policy": ("policy-enforcement-mode", ("always",)),
                           "policy-cidr-match-mode": ("policy-cidr-match-mode", ("nodes",))}


def _cilium_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The node-local and CIDR settings of cilium-config that change what the cilium profile answers."""
    out: dict[str, str] = {}
    for key, (setting, values) in _CILIUM_SETTINGS.items():
        value = str(config.get(key) or "").strip().lower()
        if value in values:
            out[setting] = value
    return out


def _aws(containers: Sequence[Json], f: _Findings, where: str) -> None:
    for c in containers:
        if c.get("name") == "aws-eks-nodeagent":
            if str(_flag(_args(c), "enable-network-policy") or "false").lower() == "true":
                f.add(f.enforcers, "aws-vpc-cni", f"{where}: aws-eks-nodeagent --enable-network-policy=true")
            else:
                f.add(f.disabled, "aws-vpc-cni", f"{where}: aws-eks-nodeagent without --enable-network-policy=true")
            return
    f.add(f.networks, "aws-vpc-cni", f"{where} (no network policy agent)")


def _kube_router(containers: Sequence[Json], f: _Findings, where: str) -> None:
    for c in containers:
        value = _flag(_args(c), "run-firewall")
        if value is not None and value.lower() == "false":
            f.add(f.disabled, "kube-router", f"{where}: --run-firewall=false")
            return
    f.add(f.enforcers, "kube-router", where)


def _nodes(inv: Inventory, f: _Findings) -> None:
    for node in inv.nodes:
        annotations = meta(node).get("annotations") or {}
        version = str((((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion")) or "")
        where = f"Node {_name(node)}"
        args = str(annotations.get("k3s.io/node-args") or "")
        if args or "+k3s" in version:
            if "--disable-network-policy" in args:
                f.add(f.disabled, "k3s", f"{where}: k3s.io/node-args has --disable-network-policy")
            else:
                f.add(f.enforcers, "k3s", f"{where}: k3s ({version or 'k3s.io/node-args'}), embedded policy "
                                          "controller")
        if any(str(k).startswith("flannel.alpha.coreos.com/") for k in annotations):
            f.add(f.networks, "flannel", f"{where}: flannel.alpha.coreos.com annotations")
        if any(str(k).startswith(("network.cilium.io/", "io.cilium.network.")) for k in annotations):
            f.add(f.hints, "cilium", f"{where}: Cilium annotations")
        if any(str(k).startswith("projectcalico.org/") for k in annotations):
            f.add(f.hints, "calico", f"{where}: projectcalico.org annotations")


def _crds(inv: Inventory, f: _Findings) -> None:
    groups = crd_groups(inv)
    for group, enforcer in (("cilium.io", "cilium"), ("crd.projectcalico.org", "calico"),
                            ("projectcalico.org", "calico"), ("crd.antrea.io", "antrea"),
                            ("networking.k8s.aws", "aws-vpc-cni")):
        if group in groups:
            f.add(f.hints, enforcer, f"CRDs of {group}")


def _first_per_node(items: Iterable[str], limit: int = 3) -> list[str]:
    """Evidence lines, at most ``limit`` node lines (a 500-node cluster repeats itself)."""
    out: list[str] = []
    nodes = 0
    for item in items:
        if item.startswith("Node "):
            nodes += 1
            if nodes > limit:
                continue
        out.append(item)
    return out


def detect(inv: Inventory) -> Detection:
    """Who enforces NetworkPolicy, from the objects alone (policy-kinds reference section 6)."""
    f = _Findings()
    _workloads(inv, f)
    _nodes(inv, f)
    _crds(inv, f)
    network = next(iter(f.networks), "")
    if f.enforcers:
        # Canal is Calico on flannel: one enforcer, not two; k3s with a CNI of its own defers to it.
        names = list(f.enforcers)
        if "canal" in names and "calico" in names:
            names.remove("calico")
        if "k3s" in names and len(names) > 1:
            names.remove("k3s")
        chosen = names[0]
        others = tuple(n for n in names[1:])
        evidence = f.enforcers[chosen] + f.hints.get("cilium" if chosen == "cilium" else chosen, [])
        return Detection(chosen, PROFILE_OF[chosen], certain=not others, network=network if network != chosen else "",
                         evidence=tuple(_first_per_node(evidence)), also=others,
                         settings=tuple(sorted(f.settings.get(chosen, {}).items())))
    if f.hints:
        # CRDs or annotations without a running enforcer: a leftover, or a namespace we cannot read.
        chosen = next(iter(f.hints))
        return Detection(chosen, PROFILE_OF[chosen], certain=False, network=network,
                         evidence=tuple(_first_per_node(f.hints[chosen])), also=tuple(list(f.hints)[1:]))
    if f.disabled or network:
        why = [w for ws in f.disabled.values() for w in ws] + [w for ws in f.networks.values() for w in ws]
        net = network or next(iter(f.disabled))
        # kindnet may link the policy library in later builds (kind#3931): not sure it does nothing.
        certain = net != "kindnet"
        return Detection(NONE, PROFILE_OF[NONE], certain=certain, network=net,
                         evidence=tuple(_first_per_node(why)))
    proxy = next((f"DaemonSet {_where(ds)}" for ds in inv.daemonsets
                  if _name(ds) == "kube-proxy" or _labels(ds).get("k8s-app") == "kube-proxy"), None)
    if proxy is not None:
        # kube-proxy and no recognised network: nothing we know enforces policy, but a managed
        # enforcer we do not know could (hence uncertain, and the answer's note says so).
        return Detection(NONE, PROFILE_OF[NONE], certain=False, network="no recognised CNI",
                         evidence=(proxy, "no known policy enforcer among the DaemonSets, CRDs and node annotations"))
    return Detection(UNKNOWN, PROFILE_OF[UNKNOWN], certain=False,
                     evidence=("neither a known network nor kube-proxy among the objects we could read",))


def from_flow_source(source: str) -> Detection | None:
    """A reachable flow source of an enforcing CNI is itself evidence (hubble -> Cilium, ...)."""
    enforcer = {"hubble": "cilium", "calico-goldmane": "calico", "calico-felix": "calico",
                "antrea": "antrea"}.get(source)
    if enforcer is None:
        return None
    return Detection(enforcer, PROFILE_OF[enforcer], certain=False, evidence=(f"flow source {source}",))
