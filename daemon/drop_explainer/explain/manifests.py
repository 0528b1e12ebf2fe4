"""Our policy records back to the NetworkPolicy objects kubectl applies.

A fix is handed to people and programs as a complete object, so it must
round-trip: parsing what we write gives back the policy we verified.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

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


def to_yaml(obj: Mapping[str, Any]) -> str:
    """Block-style YAML, as kubectl users read it.

    Our own emitter: PyYAML's representer costs ~0.4 ms per fix, which was
    half of explaining a new drop. Strings that YAML could read as anything
    but a string are double-quoted (JSON's quoting is valid YAML).
    """
    return "".join(_mapping(obj, 0))


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*|\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?")
"""Words and IPv4 addresses or CIDRs: YAML reads both back as the same string."""
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)


def _mapping(obj: Mapping[str, Any], indent: int) -> Iterator[str]:
    pad = " " * indent
    for key, value in obj.items():
        head = f"{pad}{_scalar(key)}:"
        if isinstance(value, Mapping) and value:
            yield head + "\n"
            yield from _mapping(value, indent + 2)
        elif isinstance(value, list) and value:
            yield head + "\n"
            yield from _sequence(value, indent)
        else:
            yield f"{head} {_empty(value)}\n"


def _sequence(items: list[Any], indent: int) -> Iterator[str]:
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping) and item:
            lines = list(_mapping(item, indent + 2))
            yield pad + "- " + lines[0][indent + 2:]
            yield from lines[1:]
        elif isinstance(item, list) and item:
            yield pad + "-\n"
            yield from _sequence(item, indent + 2)
        else:
            yield f"{pad}- {_empty(item)}\n"


def _empty(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
