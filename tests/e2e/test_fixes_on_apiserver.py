"""The fixes we print, pasted into kubectl against a real kube-apiserver, do what they say.

The merged fix of two pod-b drops (pod-a's, and one from node-1, which is
not pod-b's node: networking/v1 exempts only the pod's own node, so the
demo's probe drop from node-2 needs a CNI setting, not a policy change) is run
exactly as printed
(`kubectl patch ... --type=json -p '...'`) on a NetworkPolicy stored by the
real API server, then read back: the server accepted the operations, the
policy's labels and annotations are still there, and the engine, given the
stored object, admits both drops. The full-object form (`kubectl apply`)
gives the same spec, and each drop's own patch, applied one after the
other, keeps both rules (two full applies would keep only the last).

Run: .venv/bin/python -m pytest -q tests/e2e/test_fixes_on_apiserver.py
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import combining
from drop_explainer.explain.explaining import explain_connection
from drop_explainer.explain.model import Explanation, Fix
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine
from tests.e2e.test_deploy_on_apiserver import kubectl, tools  # noqa: F401 (fixtures)
from tests.integration.test_daemon import INCIDENT

pytestmark = pytest.mark.apiserver
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
ASKED = [("frontend/pod-a", "backend/pod-b"), ("172.18.0.11", "backend/pod-b")]


def _incident(ns: str) -> tuple[ClusterState, dict[str, Any]]:
    """The incident with namespace backend renamed (the server is shared), and its policy as a labelled object."""
    text = (INCIDENT / "cluster.yaml").read_text().replace("namespace: backend", f"namespace: {ns}")
    text = text.replace("name: backend\n", f"name: {ns}\n").replace(": backend}", f": {ns}}}")
    state = ClusterState.build(parse_documents("incident", text))
    policy = next(d for d in yaml.safe_load(text)["items"] if d["kind"] == "NetworkPolicy")
    meta = {"name": policy["metadata"]["name"], "namespace": ns, "labels": {"team": "backend"},
            "annotations": {"owner": "payments-oncall"}}
    return state, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
                   "spec": policy["spec"]}


def _explanations(state: ClusterState, ns: str) -> list[Explanation]:
    engine = Engine(state)
    out = []
    for src, dst in ASKED:
        conn = queries.connection(state, queries.Query(src, dst.replace("backend/", f"{ns}/"), 8080, "TCP"))
        out.append(explain_connection(engine, conn))
    return out


def _run_printed_patch(kubectl: Kubectl, fix: Fix) -> None:  # noqa: F811
    line = next(x for x in fix.apply.splitlines() if x.startswith("kubectl patch "))
    done = kubectl(*shlex.split(line)[1:])
    assert done.returncode == 0, done.stderr


def _stored(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:  # noqa: F811
    done = kubectl("get", "networkpolicy", name, "-n", ns, "-o", "json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _all_allowed(state: ClusterState, stored: dict[str, Any], ns: str) -> bool:
    after = state.with_objects(*parse_documents("stored", json.dumps(stored)))
    engine = Engine(after)
    return all(engine.evaluate(queries.connection(after, queries.Query(
        src, dst.replace("backend/", f"{ns}/"), 8080, "TCP"))).allowed for src, dst in ASKED)


def _fresh(kubectl: Kubectl, ns: str, policy: dict[str, Any]) -> None:  # noqa: F811
    kubectl("delete", "networkpolicy", policy["metadata"]["name"], "-n", ns, "--ignore-not-found")
    done = kubectl("create", "-f", "-", docs=[policy])
    assert done.returncode == 0, done.stderr


def test_printed_fixes_work_on_a_real_apiserver(kubectl: Kubectl) -> None:  # noqa: F811
    """Merged patch as printed, full object, and both per-drop patches in turn: each admits both drops."""
    ns = f"backend-{uuid.uuid4().hex[:6]}"
    state, policy = _incident(ns)
    done = kubectl("create", "namespace", ns)
    assert done.returncode == 0, done.stderr
    try:
        expls = _explanations(state, ns)
        merged = combining.for_explanations(Engine(state), expls)
        assert [f.target for f in merged] == [f"networkpolicy {ns}/default-deny"]

        _fresh(kubectl, ns, policy)
        assert not _all_allowed(state, _stored(kubectl, ns, "default-deny"), ns)
        _run_printed_patch(kubectl, merged[0])
        patched = _stored(kubectl, ns, "default-deny")
        assert patched["metadata"]["labels"] == {"team": "backend"}
        assert patched["metadata"]["annotations"]["owner"] == "payments-oncall"
        assert _all_allowed(state, patched, ns)

        _fresh(kubectl, ns, policy)
        done = kubectl("apply", "-f", "-", docs=[dict(merged[0].objects[0])])
        assert done.returncode == 0, done.stderr
        full = _stored(kubectl, ns, "default-deny")
        assert full["spec"] == patched["spec"]
        assert full["metadata"]["labels"] == {"team": "backend"}

        _fresh(kubectl, ns, policy)
        for expl in expls:  # each drop's own fix, in the order shown
            _run_printed_patch(kubectl, expl.fixes[0])
        assert _all_allowed(state, _stored(kubectl, ns, "default-deny"), ns)
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
