"""Our policy records back to the NetworkPolicy objects kubectl applies.

A fix is handed to people and programs as a complete object, so it must
round-trip: parsing what we write gives back the policy we verified.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
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
    out: list[str] = []
    _mapping(obj, 0, out)
    return "".join(out)


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*|\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?")
"""Words and IPv4 addresses or CIDRs: YAML reads both back as the same string."""
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


@lru_cache(maxsize=4096)
def _text(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    return _text(str(value))


def _mapping(obj: Mapping[str, Any], indent: int, out: list[str], lead: str | None = None) -> None:
    """``lead`` replaces the indentation of the first key: "- " when the mapping is a list item."""
    pad = " " * indent
    for key, value in obj.items():
        head = (pad if lead is None else lead) + _scalar(key) + ":"
        lead = None
        if isinstance(value, Mapping) and value:
            out.append(head + "\n")
            _mapping(value, indent + 2, out)
        elif isinstance(value, list) and value:
            out.append(head + "\n")
            _sequence(value, indent, out)
        else:
            out.append(f"{head} {_empty(value)}\n")


def _sequence(items: list[Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping) and item:
            _mapping(item, indent + 2, out, lead=pad + "- ")
        elif isinstance(item, list) and item:
            out.append(pad + "-\n")
            _sequence(item, indent + 2, out)
        else:
            out.append(f"{pad}- {_empty(item)}\n")


def _empty(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
