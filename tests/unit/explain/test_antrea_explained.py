"""Antrea's attribution and Antrea-native policies in answers: named, cross-checked, "not evaluated"."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from drop_explainer.antrea_pb import flow_pb2 as af
from drop_explainer.cluster.loading import load_state
from drop_explainer.explain import explaining, rendering
from drop_explainer.normalise import antrea
from drop_explainer.policy.engine import Engine
from drop_explainer.testing.antrea_server import record

STORIES = Path(__file__).resolve().parents[2] / "fixtures" / "stories"
ACNP = {"apiVersion": "crd.antrea.io/v1beta1", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "block-db"},
        "spec": {"priority": 5, "tier": "securityops",
                 "appliedTo": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                 "ingress": [{"action": "Drop", "name": "drop-from-frontend", "from": [
                     {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}]}]}}
ANNP = {"apiVersion": "crd.antrea.io/v1beta1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "backend"},
        "spec": {"priority": 3, "tier": "application", "appliedTo": [{"podSelector": {}}],
                 "ingress": [{"action": "Allow", "ports": [{"protocol": "TCP", "port": 8080}]}]}}
TIER = {"apiVersion": "crd.antrea.io/v1beta1", "kind": "Tier", "metadata": {"name": "securityops"},
        "spec": {"priority": 100}}


def state_dir(tmp_path: Path, *extra: dict[str, object]) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(STORIES / "_base" / "cluster.yaml", state / "base.yaml")
    shutil.copy(STORIES / "seed-incident" / "policies.yaml", state / "policies.yaml")
    (state / "antrea.yaml").write_text(yaml.safe_dump({"kind": "List", "items": list(extra)}), encoding="utf-8")
    return state


def flow(**k8s: object) -> af.Flow:
    pb = record(1_760_000_000, source=("frontend", "pod-a", "10.244.1.10"),
                dest=("backend", "pod-b", "10.244.2.20"))
    for key, value in k8s.items():
        setattr(pb.k8s, key, value)
    return pb


def test_an_antrea_networkpolicy_is_never_read_as_a_kubernetes_one(tmp_path: Path) -> None:
    state = load_state(state_dir(tmp_path, ANNP, ACNP, TIER))
    assert sorted(state.policies) == ["backend/default-deny"], "crd.antrea.io NetworkPolicy is not networking.k8s.io"
    assert [o.describe() for o in state.not_evaluated] == [
        "Antrea NetworkPolicy backend/allow-web (tier application, priority 3)",
        "Antrea ClusterNetworkPolicy block-db (tier securityops, priority 5)",
        "Antrea Tier securityops (priority 100)"]


def test_every_answer_names_the_antrea_policies_as_not_evaluated(tmp_path: Path) -> None:
    engine = Engine(load_state(state_dir(tmp_path, ACNP)))
    expl = explaining.explain_flow(engine, antrea.flow_from_proto(flow()))
    assert expl.notes[0].startswith(
        "not evaluated: Antrea ClusterNetworkPolicy block-db (tier securityops, priority 5)")
    assert "incomplete" in expl.notes[0]
    assert "Note: not evaluated: Antrea ClusterNetworkPolicy block-db" in rendering.explanation_text(expl)


def test_an_isolation_drop_agrees_with_our_evaluation(tmp_path: Path) -> None:
    """Antrea names no policy for a K8s isolation drop; the engine finds backend/default-deny."""
    engine = Engine(load_state(state_dir(tmp_path)))
    expl = explaining.explain_flow(engine, antrea.flow_from_proto(flow()))
    assert expl.agreement.agrees is True
    assert [t.policy.key for t in expl.denying] == ["backend/default-deny"]
    assert expl.fixes


def test_an_antrea_cluster_policy_drop_is_named_and_not_evaluated(tmp_path: Path) -> None:
    engine = Engine(load_state(state_dir(tmp_path, ACNP)))
    pb = flow(ingress_network_policy_type=af.NETWORK_POLICY_TYPE_ACNP, ingress_network_policy_name="block-db",
              ingress_network_policy_rule_name="drop-from-frontend")
    expl = explaining.explain_flow(engine, antrea.flow_from_proto(pb))
    assert expl.headline.startswith("DROPPED frontend/pod-a -> backend/pod-b TCP/8080: Antrea's "
                                    "AntreaClusterNetworkPolicy block-db rule drop-from-frontend drops it; "
                                    "AntreaClusterNetworkPolicy is not evaluated here")
    assert expl.agreement.agrees is False
    assert expl.fixes == (), "no fix can be checked against a kind we do not evaluate"
