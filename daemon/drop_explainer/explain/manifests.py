"""Our policy records back to the NetworkPolicy objects kubectl applies.

A fix is handed to people and programs as a complete object, so it must
round-trip: parsing what we write gives back the policy we verified.
"""

from __future__ import annotations

from typing import Any

import yaml

from drop_explainer.cluster.objects import LabelSelector, NetworkPolicy, Peer, PolicyPort, Rule


def selector_json(sel: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        out["matchExpressions"] = [
            {"key": r.key, "operator": r.operator.value, **({"values": list(r.values)} if r.values else {})}
            for r in sel.match_expressions
        ]
    return out


def peer_json(peer: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.ip_block is not None:
        out["ipBlock"] = {"cidr": peer.ip_block.cidr}
        if peer.ip_block.except_:
            out["ipBlock"]["except"] = list(peer.ip_block.except_)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = selector_json(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = selector_json(peer.pod_selector)
    return out


def port_json(pp: PolicyPort) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": pp.protocol}
    if pp.port is not None:
        out["port"] = pp.port
    if pp.end_port is not None:
        out["endPort"] = pp.end_port
    return out


def rule_json(rule: Rule, peers_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.peers:
        out[peers_key] = [peer_json(p) for p in rule.peers]
    if rule.ports:
        out["ports"] = [port_json(p) for p in rule.ports]
    return out


def policy_json(p: NetworkPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "podSelector": selector_json(p.pod_selector),
        "policyTypes": sorted(t.value for t in p.policy_types),
    }
    if p.ingress:
        spec["ingress"] = [rule_json(r, "from") for r in p.ingress]
    if p.egress:
        spec["egress"] = [rule_json(r, "to") for r in p.egress]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": spec,
    }


# libyaml's dumper: the pure one costs milliseconds per fix.
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
