"""Which component enforces policy, on recorded states of each kind of cluster (policy-kinds.md section 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drop_explainer.cluster import enforcer

RECORDED = Path(__file__).parent / "recorded" / "enforcers"
STATES = sorted(p.stem for p in RECORDED.glob("*.yaml"))


def load(name: str) -> tuple[enforcer.Inventory, dict[str, Any]]:
    doc = yaml.safe_load((RECORDED / f"{name}.yaml").read_text(encoding="utf-8"))
    return enforcer.Inventory.from_objects(doc["items"]), doc["expect"]


def test_every_kind_of_cluster_the_issue_names_is_recorded() -> None:
    assert {"cilium", "calico", "antrea", "flannel-alone", "flannel-kube-network-policies", "k3s"} <= set(STATES)


@pytest.mark.parametrize("name", STATES)
def test_detection_gives_the_expected_enforcer_and_profile(name: str) -> None:
    inventory, expect = load(name)
    found = enforcer.detect(inventory)
    assert (found.enforcer, found.profile, found.certain) == (expect["enforcer"], expect["profile"], expect["certain"])
    if "network" in expect:
        assert found.network == expect["network"]
    assert found.evidence, "an answer always says what it rests on"


def test_flannel_alone_leads_with_not_enforced_and_names_flannel() -> None:
    found = enforcer.detect(load("flannel-alone")[0])
    assert found.enforces is False
    assert found.not_enforced_note() == (
        "NetworkPolicy objects exist, but this cluster's network (flannel) does not enforce them: "
        "this connection is not blocked by policy.")
    assert found.summary() == "policy enforcer: none: flannel does not enforce NetworkPolicy"
    assert any("kube-flannel/kube-flannel-ds" in e for e in found.evidence)


def test_an_enforcer_never_gets_the_note() -> None:
    for name in ("cilium", "calico", "antrea", "flannel-kube-network-policies", "k3s", "canal"):
        found = enforcer.detect(load(name)[0])
        assert found.enforces is True, name
        assert found.not_enforced_note() is None, name


def test_uncertain_detection_says_so() -> None:
    found = enforcer.detect(load("kube-proxy-only")[0])
    assert "uncertain" in found.summary()
    note = found.not_enforced_note()
    assert note is not None
    assert "as far as we can tell" in note
    assert "uncertain" in enforcer.detect(load("antrea-crds-only")[0]).summary()


def test_nothing_readable_is_unknown_not_a_guess() -> None:
    found = enforcer.detect(enforcer.Inventory())
    assert (found.enforcer, found.enforces, found.certain) == ("unknown", None, False)
    assert found.not_enforced_note() is None


def test_two_enforcers_is_uncertain_and_names_both() -> None:
    cilium, _ = load("cilium")
    antrea, _ = load("antrea")
    both = enforcer.Inventory(daemonsets=[*cilium.daemonsets, *antrea.daemonsets])
    found = enforcer.detect(both)
    assert found.enforcer == "cilium"
    assert found.also == ("antrea",)
    assert not found.certain


def test_kube_router_without_firewall_and_aws_agent_without_the_flag_do_not_enforce() -> None:
    kube_router = {"kind": "DaemonSet", "metadata": {"name": "kube-router", "namespace": "kube-system"},
                   "spec": {"template": {"spec": {"containers": [
                       {"name": "kube-router", "args": ["--run-router=true", "--run-firewall=false"]}]}}}}
    aws = {"kind": "DaemonSet", "metadata": {"name": "aws-node", "namespace": "kube-system"},
           "spec": {"template": {"spec": {"containers": [
               {"name": "aws-node"}, {"name": "aws-eks-nodeagent", "args": ["--enable-network-policy=false"]}]}}}}
    assert enforcer.detect(enforcer.Inventory(daemonsets=[kube_router])).enforcer == "none"
    assert enforcer.detect(enforcer.Inventory(daemonsets=[aws])).enforcer == "none"
    aws["spec"]["template"]["spec"]["containers"][1]["args"] = ["--enable-network-policy=true"]  # type: ignore[index]
    assert enforcer.detect(enforcer.Inventory(daemonsets=[aws])).enforcer == "aws-vpc-cni"


def test_a_flow_source_of_an_enforcing_cni_is_evidence_but_not_certainty() -> None:
    found = enforcer.from_flow_source("antrea")
    assert found is not None
    assert (found.enforcer, found.profile, found.certain) == ("antrea", "antrea", False)
    assert enforcer.from_flow_source("replay") is None
