"""A pod's workload from its ownerReferences, and from the controllers' naming when the owner is not watched."""

from __future__ import annotations

import pytest

from drop_explainer.cluster import objects as o
from drop_explainer.cluster import workloads
from drop_explainer.cluster.workloads import Workload

HASH = {"pod-template-hash": "5d8f7c9b6"}


def pod(name: str, owners: tuple[tuple[str, str], ...] = (), labels: dict[str, str] | None = None) -> o.Pod:
    return o.Pod("shop", name, labels or {}, owners=tuple(o.OwnerReference(k, n) for k, n in owners))


@pytest.mark.parametrize(("subject", "expected"), [
    pytest.param(pod("web-5d8f7c9b6-x2k9p", (("ReplicaSet", "web-5d8f7c9b6"),), HASH),
                 Workload("shop", "Deployment", "web", inferred=True), id="replicaset-of-a-deployment"),
    pytest.param(pod("web-6b7c8d9e0-q1w2e", (("ReplicaSet", "web-6b7c8d9e0"),), {"pod-template-hash": "6b7c8d9e0"}),
                 Workload("shop", "Deployment", "web", inferred=True), id="the-same-deployment-after-a-rollout"),
    pytest.param(pod("my-app-v2-5d8f7c9b6-x2k9p", (("ReplicaSet", "my-app-v2-5d8f7c9b6"),), HASH),
                 Workload("shop", "Deployment", "my-app-v2", inferred=True), id="deployment-name-with-dashes"),
    pytest.param(pod("legacy-abcde", (("ReplicaSet", "legacy"),)),
                 Workload("shop", "ReplicaSet", "legacy"), id="bare-replicaset-without-hash-label"),
    pytest.param(pod("legacy-abcde", (("ReplicaSet", "legacy"),), HASH),
                 Workload("shop", "ReplicaSet", "legacy"), id="replicaset-whose-name-does-not-end-in-the-hash"),
    pytest.param(pod("db-0", (("StatefulSet", "db"),)), Workload("shop", "StatefulSet", "db"), id="statefulset"),
    pytest.param(pod("agent-7xk2p", (("DaemonSet", "agent"),)), Workload("shop", "DaemonSet", "agent"),
                 id="daemonset"),
    pytest.param(pod("backup-29430000-abcde", (("Job", "backup-29430000"),)),
                 Workload("shop", "CronJob", "backup", inferred=True), id="job-of-a-cronjob"),
    pytest.param(pod("migrate-2-abcde", (("Job", "migrate-2"),)), Workload("shop", "Job", "migrate-2"),
                 id="job-with-a-short-number-is-its-own-workload"),
    pytest.param(pod("debug"), Workload("shop", "Pod", "debug"), id="bare-pod"),
    pytest.param(pod("vm-launcher-x", (("VirtualMachineInstance", "vm1"),)),
                 Workload("shop", "VirtualMachineInstance", "vm1"), id="other-owner-kind-kept"),
])
def test_workload_of_a_pod_in_the_state(subject: o.Pod, expected: Workload) -> None:
    """ownerReferences first; ReplicaSet -> Deployment and Job -> CronJob by the controllers' naming."""
    assert workloads.of_pod(subject) == expected


@pytest.mark.parametrize(("name", "labels", "cni", "expected"), [
    pytest.param("web-5d8f7c9b6-x2k9p", HASH, None, Workload("shop", "Deployment", "web", inferred=True),
                 id="deployment-from-hash-label"),
    pytest.param("web-5d8f7c9b6-x2k9p", HASH, "web", Workload("shop", "", "web", inferred=True),
                 id="the-cni-workload-name-first"),
    pytest.param("backup-29430000-abcde", {"batch.kubernetes.io/job-name": "backup-29430000"}, None,
                 Workload("shop", "CronJob", "backup", inferred=True), id="cronjob-from-job-name-label"),
    pytest.param("once-abcde", {"job-name": "once"}, None, Workload("shop", "Job", "once"), id="plain-job"),
    pytest.param("db-1", {"statefulset.kubernetes.io/pod-name": "db-1"}, None,
                 Workload("shop", "StatefulSet", "db", inferred=True), id="statefulset-from-pod-name-label"),
    pytest.param("web-x2k9p", {"pod-template-hash": "zzz"}, None, Workload("shop", "Pod", "web-x2k9p"),
                 id="hash-label-not-in-the-name-is-not-trusted"),
    pytest.param("debug", {}, None, Workload("shop", "Pod", "debug"), id="nothing-known-the-pod-itself"),
])
def test_workload_of_a_pod_gone_from_the_state(name: str, labels: dict[str, str], cni: str | None,
                                               expected: Workload) -> None:
    """The old pods of a rollout still resolve to their Deployment, from the flow's labels and name."""
    assert workloads.of_gone_pod("shop", name, labels, cni) == expected


def test_the_controller_owner_is_followed_when_there_are_several() -> None:
    """ownerReferences may list several owners; at most one is the controller, and it decides."""
    subject = o.Pod("shop", "web-5d8f7c9b6-x2k9p", HASH, owners=(
        o.OwnerReference("ConfigMap", "adopter"), o.OwnerReference("ReplicaSet", "web-5d8f7c9b6", controller=True)))
    assert workloads.of_pod(subject) == Workload("shop", "Deployment", "web", inferred=True)


@pytest.mark.parametrize(("prefix", "labels", "pods", "expected"), [
    pytest.param("web-5d8f7c9b6-", HASH, (), Workload("shop", "Deployment", "web", inferred=True),
                 id="hash-label-of-the-aggregate"),
    pytest.param("agent-", {}, (o.Pod("shop", "agent-7xk2p", owners=(o.OwnerReference("DaemonSet", "agent"),),
                                      generate_name="agent-"),),
                 Workload("shop", "DaemonSet", "agent"), id="a-pod-of-the-state-with-that-generatename"),
    pytest.param("web-5d8f7c9b6-", {}, (), None, id="nothing-known"),
])
def test_workload_of_a_calico_aggregate(prefix: str, labels: dict[str, str], pods: tuple[o.Pod, ...],
                                        expected: Workload | None) -> None:
    """Goldmane aggregates pods by generateName; a rollout changes the prefix, not the workload."""
    assert workloads.of_prefix("shop", prefix, labels, pods) == expected


def test_pod_in_state_and_gone_pod_agree_on_the_key() -> None:
    """Signatures hold the key, so a pod that disappears mid-incident keeps its signature."""
    live = workloads.of_pod(pod("web-5d8f7c9b6-x2k9p", (("ReplicaSet", "web-5d8f7c9b6"),), HASH))
    gone = workloads.of_gone_pod("shop", "web-5d8f7c9b6-x2k9p", HASH)
    from_cni = workloads.of_gone_pod("shop", "web-5d8f7c9b6-x2k9p", {}, "web")
    assert live.key == gone.key == from_cni.key == "shop/web"
