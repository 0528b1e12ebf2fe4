"""The explainer's own NetworkPolicies, judged by the explainer's own engine (`drop-explainer whatif`).

A small cluster state with the explainer's pods, kube-dns, hubble-relay,
Goldmane, a Prometheus and a stranger, plus each overlay's rendered policies:
what the explainer needs is allowed, and nothing else is. The Cilium-only
rule for the API server (a CiliumNetworkPolicy) is outside Kubernetes
semantics and is checked by its shape in test_deploy_manifests.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, OVERLAYS, Tools, render

EXPLAINER = {"app.kubernetes.io/name": "drop-explainer", "app.kubernetes.io/component": "explainer"}
API_PLACEHOLDER = "192.0.2.1"
"""The address components/apiserver-ipblock ships (TEST-NET-1): set per cluster."""


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def _node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def _pod(ns: str, name: str, labels: dict[str, str], ip: str, node: str, *,
         ports: list[tuple[int, str]]) -> dict[str, Any]:
    host = {"node-1": "172.18.0.11", "node-2": "172.18.0.12"}[node]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x:1", "ports": [
                {"containerPort": port, "protocol": proto} for port, proto in ports]}]},
            "status": {"phase": "Running", "hostIP": host, "podIP": ip, "podIPs": [{"ip": ip}]}}


STATE: list[dict[str, Any]] = [
    *(_namespace(n) for n in ("drop-explainer", "kube-system", "calico-system", "flow-aggregator", "monitoring",
                              "default")),
    _node("node-1", "172.18.0.11", "10.244.1.0/24"),
    _node("node-2", "172.18.0.12", "10.244.2.0/24"),
    _pod("drop-explainer", "explainer-a", EXPLAINER, "10.244.1.5", "node-1", ports=[(8080, "TCP"), (8081, "TCP")]),
    _pod("drop-explainer", "explainer-b", EXPLAINER, "10.244.2.5", "node-2", ports=[(8080, "TCP"), (8081, "TCP")]),
    _pod("kube-system", "coredns", {"k8s-app": "kube-dns"}, "10.244.1.53", "node-1", ports=[(53, "UDP"), (53, "TCP")]),
    _pod("kube-system", "hubble-relay", {"k8s-app": "hubble-relay"}, "10.244.2.45", "node-2", ports=[(4245, "TCP")]),
    _pod("calico-system", "goldmane", {"k8s-app": "goldmane"}, "10.244.2.74", "node-2", ports=[(7443, "TCP")]),
    _pod("flow-aggregator", "flow-aggregator", {"app": "flow-aggregator"}, "10.244.2.88", "node-2",
         ports=[(14740, "TCP")]),
    _pod("monitoring", "prometheus", {"app.kubernetes.io/name": "prometheus"}, "10.244.1.90", "node-1",
         ports=[(9090, "TCP")]),
    _pod("default", "stranger", {"app": "stranger"}, "10.244.1.66", "node-1", ports=[(8080, "TCP")]),
    _pod("kube-system", "other", {"k8s-app": "other"}, "10.244.2.77", "node-2", ports=[(53, "UDP"), (8080, "TCP")]),
]

# (from, to, port, protocol) -> allowed, for every overlay.
COMMON: list[tuple[str, str, int, str, bool]] = [
    ("drop-explainer/explainer-a", "kube-system/coredns", 53, "UDP", True),
    ("drop-explainer/explainer-a", "kube-system/coredns", 53, "TCP", True),
    ("drop-explainer/explainer-a", "drop-explainer/explainer-b", 8080, "TCP", True),
    ("drop-explainer/explainer-b", "drop-explainer/explainer-a", 8080, "TCP", True),
    ("monitoring/prometheus", "drop-explainer/explainer-a", 8080, "TCP", True),
    # what nobody needs
    ("default/stranger", "drop-explainer/explainer-a", 8080, "TCP", False),
    ("kube-system/other", "drop-explainer/explainer-a", 8080, "TCP", False),
    ("drop-explainer/explainer-a", "kube-system/other", 53, "UDP", False),  # DNS only to kube-dns
    ("drop-explainer/explainer-a", "default/stranger", 8080, "TCP", False),
    ("drop-explainer/explainer-a", "8.8.8.8", 443, "TCP", False),
    ("monitoring/prometheus", "drop-explainer/explainer-a", 9090, "TCP", False),
]
PER_OVERLAY: dict[str, list[tuple[str, str, int, str, bool]]] = {
    "hubble-node": [
        ("drop-explainer/explainer-a", "kube-system/hubble-relay", 4245, "TCP", False),  # it reads the socket
    ],
    "hubble-relay": [
        ("drop-explainer/explainer-a", "kube-system/hubble-relay", 4245, "TCP", True),  # the pod port, not 80
        ("drop-explainer/explainer-a", "kube-system/other", 4245, "TCP", False),
    ],
    "calico-node": [
        ("drop-explainer/explainer-a", API_PLACEHOLDER, 6443, "TCP", True),
        ("drop-explainer/explainer-a", API_PLACEHOLDER, 22, "TCP", False),
        ("drop-explainer/explainer-a", "calico-system/goldmane", 7443, "TCP", False),
    ],
    "antrea": [
        ("drop-explainer/explainer-a", "flow-aggregator/flow-aggregator", 14740, "TCP", True),
        ("drop-explainer/explainer-a", API_PLACEHOLDER, 6443, "TCP", True),
        ("drop-explainer/explainer-a", "flow-aggregator/flow-aggregator", 4739, "TCP", False),  # IPFIX: not ours
        ("drop-explainer/explainer-a", "calico-system/goldmane", 7443, "TCP", False),
    ],
    "calico-goldmane": [
        ("drop-explainer/explainer-a", "calico-system/goldmane", 7443, "TCP", True),
        ("drop-explainer/explainer-a", API_PLACEHOLDER, 6443, "TCP", True),
        ("drop-explainer/explainer-a", "kube-system/hubble-relay", 4245, "TCP", False),
    ],
}


def _state(tmp_path: Path, policies: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None) -> Path:
    items = [*STATE, *(extra or []), *policies]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    return tmp_path


def _whatif(state_dir: Path, cases: list[tuple[str, str, int, str, bool]]) -> list[dict[str, Any]]:
    lines = "".join(json.dumps({"from": s, "to": d, "port": p, "protocol": proto}) + "\n"
                    for s, d, p, proto, _ in cases)
    cli = "import sys; from drop_explainer.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", cli, "whatif", "--state", str(state_dir), "--batch", "-"],
                          input=lines, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policies_allow_what_the_explainer_needs_and_nothing_else(
        overlay: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """DNS, peers, Prometheus and the overlay's flow source are allowed; strangers and the world are not."""
    policies = [d for d in rendered[f"overlays/{overlay}"] if d["kind"] == "NetworkPolicy"]
    cases = COMMON + PER_OVERLAY[overlay]
    answers = _whatif(_state(tmp_path, policies), cases)
    wrong = [f"{s} -> {d}:{p}/{proto}: expected {'allowed' if want else 'denied'}"
             for (s, d, p, proto, want), got in zip(cases, answers, strict=True) if got.get("allowed") is not want]
    assert not wrong, "\n".join(wrong) + "\n" + json.dumps(answers, indent=1)[:4000]
    # the explainer's pods are isolated both ways, by our policies and no others
    first = answers[0]
    assert first["egress"]["isolated"]
    assert {p["name"] for p in first["egress"]["allowed_by"]} == {"drop-explainer"}


def test_kubelet_probe_component_admits_the_nodes_it_names(tools: Tools, tmp_path: Path) -> None:
    """components/kubelet-probe-ipblock lets its CIDR reach the probe port 8081 (only), for CNIs that police
    the node's traffic."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    up = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "drop-explainer",
        "resources": [f"{up}/overlays/calico-node"], "components": [f"{up}/components/kubelet-probe-ipblock"]}))
    policies = [d for d in render(tools, str(overlay)) if d["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["name"] for p in policies} >= {"drop-explainer-kubelet-probes"}
    # a node inside the placeholder CIDR (TEST-NET-1), as the probes' source address
    node = _node("node-3", "192.0.2.13", "10.244.3.0/24")
    cases = [("192.0.2.13", "drop-explainer/explainer-a", 8081, "TCP", True),
             ("192.0.2.13", "drop-explainer/explainer-a", 8080, "TCP", False),
             ("192.0.2.13", "drop-explainer/explainer-a", 9090, "TCP", False),
             # node-2, outside the CIDR (node-1 would be the pod's own node, which networking/v1 exempts)
             ("172.18.0.12", "drop-explainer/explainer-a", 8081, "TCP", False)]
    answers = _whatif(_state(tmp_path, policies, [node]), cases)
    assert [a["allowed"] for a in answers] == [want for *_, want in cases], answers
