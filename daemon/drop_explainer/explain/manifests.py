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
    meta: dict[str, Any] = {"name": p.name, "namespace": p.namespace}
    if p.labels:
        meta["labels"] = dict(p.labels)
    if p.annotations:
        meta["annotations"] = dict(p.annotations)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def json_patch(before: NetworkPolicy, after: NetworkPolicy) -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``before`` into ``after`` for ``kubectl patch --type=json``.

    Rules and ports are appended (``/-``), never written at an index, so two
    patches made from the same starting object both survive when applied one
    after the other; a full ``kubectl apply`` of each would keep only the last.
    Only what changed is named: labels, annotations and fields we do not model
    stay exactly as they are on the live object.
    """
    ops: list[dict[str, Any]] = []
    old, new = policy_json(before)["spec"], policy_json(after)["spec"]
    if old["policyTypes"] != new["policyTypes"]:
        ops.append({"op": "add", "path": "/spec/policyTypes", "value": new["policyTypes"]})
    for key in ("ingress", "egress"):
        ops += _list_ops(f"/spec/{key}", old.get(key, []), new.get(key, []))
    return ops


def _list_ops(path: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if old == new:
        return []
    if not old or len(new) < len(old):
        # "add" on an object member creates it or replaces it: right whether the list is absent or empty.
        return [{"op": "add", "path": path, "value": new}]
    ops: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        if a == b:
            continue
        ports_a, ports_b = a.get("ports", []), b.get("ports", [])
        same_peers = {k: v for k, v in a.items() if k != "ports"} == {k: v for k, v in b.items() if k != "ports"}
        if same_peers and ports_a and ports_b[: len(ports_a)] == ports_a:
            ops += [{"op": "add", "path": f"{path}/{i}/ports/-", "value": pp} for pp in ports_b[len(ports_a):]]
        else:
            ops.append({"op": "replace", "path": f"{path}/{i}", "value": b})
    ops += [{"op": "add", "path": f"{path}/-", "value": r} for r in new[len(old):]]
    return ops


_HELM = "meta.helm.sh/release-name"
_FLUX = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")


def managed_by(p: NetworkPolicy) -> str | None:
    """Who else writes this policy, from the marks Helm, Argo CD and Flux leave, or its managedFields.

    A policy applied from Git or a chart is put back by its controller (or
    by the next release): a kubectl edit of it does not last, and the
    change belongs in its source.
    """
    labels, notes = p.labels, p.annotations
    if _HELM in notes or labels.get("app.kubernetes.io/managed-by", "").lower() == "helm":
        release = notes.get(_HELM)
        return f"Helm (release {release})" if release else "Helm"
    if "argocd.argoproj.io/tracking-id" in notes or "argocd.argoproj.io/instance" in labels:
        app = notes.get("argocd.argoproj.io/tracking-id", "").split(":")[0] or labels.get("argocd.argoproj.io/instance")
        return f"Argo CD (application {app})"
    for key in _FLUX:
        if key in labels:
            return f"Flux ({key.split('.')[0]} {labels.get(key.replace('/name', '/namespace'), '?')}/{labels[key]})"
    if "app.kubernetes.io/instance" in labels:
        return f"Argo CD or another tool (label app.kubernetes.io/instance={labels['app.kubernetes.io/instance']})"
    others = sorted({m for m in p.managers if m and not m.startswith("kubectl")})
    if others:
        return f"{', '.join(others)} (managedFields)"
    return None


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
