"""A Deployment's rollout on a real API server: one signature, one Event counting up on the pod seen first.

No controller-manager runs in the harness, so the Deployment's ReplicaSets
are represented as the pods' ownerReferences and ``pod-template-hash``
labels, exactly as the deployment controller writes them; the daemon
watches Pods only and resolves the Deployment from that naming
(cluster/workloads.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from drop_explainer.cluster import kubeapi
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.flows.model import Protocol as L4
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks import events
from drop_explainer.sinks.base import ExplainedDrop, signature_of
from drop_explainer.sinks.store import MEMORY, DropStore
from tests.harness.apiserver import KubeApiServer
from tests.harness.kubelet import as_json, create_node, create_pod, ensure_namespace
from tests.integration.test_live_cluster import admin, daemon_endpoint, find_events, off_loop, unique

pytestmark = pytest.mark.apiserver
__all__ = ["admin"]  # the fixture, imported for this module's tests


def replica(core: client.CoreV1Api, ns: str, node: str, hash_: str, ip: str) -> dict[str, Any]:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"web-{hash_}", "uid": str(uuid.uuid4()),
             "controller": True, "blockOwnerDeletion": True}
    pod = create_pod(core, ns, f"web-{hash_}-{uuid.uuid4().hex[:5]}", node_name=node, pod_ip=ip,
                     host_ip="192.0.2.90", labels={"app": "web", "pod-template-hash": hash_},
                     owner_references=[owner])
    return dict(as_json(core.api_client, pod))


async def drop_to(endpoint: kubeapi.Endpoint, ns: str, pod: str, ip: str) -> ExplainedDrop:
    state = await kubeapi.fetch_state(endpoint)
    flow = Flow(time.time_ns(), Verdict.DROPPED, Endpoint(EndpointKind.POD, "10.254.0.1", ns, "client"),
                Endpoint(EndpointKind.POD, ip, ns, pod), L4.TCP, 40000, 8080,
                drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS)
    expl = explain_flow(Engine(state), flow)
    return ExplainedDrop(flow, expl, signature_of(flow, expl, state))


async def test_a_rollout_keeps_the_signature_and_counts_up_the_one_event(
        kube_apiserver: KubeApiServer, admin: ApiClient) -> None:
    """Old pod drops, rollout replaces it (new name, new hash), new pod drops: same signature, one Event, count 2."""
    core = client.CoreV1Api(admin)
    ns, node = unique("rollout"), unique("node")
    await off_loop(ensure_namespace, core, ns)
    await off_loop(create_node, core, node, "192.0.2.90", ["10.254.0.0/24"])
    await off_loop(create_pod, core, ns, "client", node_name=node, pod_ip="10.254.0.1", host_ip="192.0.2.90")
    pol: Any = {"metadata": {"name": "deny"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    await off_loop(client.NetworkingV1Api(admin).create_namespaced_network_policy, ns, pol)
    old = await off_loop(replica, core, ns, node, "5d8f7c9b6", "10.254.0.10")
    old_name, old_uid = old["metadata"]["name"], old["metadata"]["uid"]

    endpoint = daemon_endpoint(kube_apiserver)
    first = await drop_to(endpoint, ns, old_name, "10.254.0.10")
    store = DropStore(MEMORY)
    async with kubeapi.Client(endpoint) as api:
        sink = events.EventSink(api, events.EventSettings(instance=node, min_update_interval_s=0.2))
        task = asyncio.create_task(sink.run())
        try:
            assert store.record(first) is True
            sink.handle(first)
            async with asyncio.timeout(20):
                while sink.stats.created != 1:
                    await asyncio.sleep(0.05)
            # The rollout: a new ReplicaSet hash, a new pod, the old pod deleted.
            new = await off_loop(replica, core, ns, node, "7f6e5d4c3", "10.254.0.11")
            await off_loop(core.delete_namespaced_pod, old_name, ns, grace_period_seconds=0)
            second = await drop_to(endpoint, ns, new["metadata"]["name"], "10.254.0.11")
            assert second.signature == first.signature
            assert second.signature.id == first.signature.id
            assert second.signature.destination == f"{ns}/web"
            assert second.signature.affected == f"{ns}/{new['metadata']['name']}"  # per-pod facts keep the pod
            assert store.record(second) is False
            sink.handle(second)
            async with asyncio.timeout(20):
                while (found := await off_loop(find_events, admin, ns, old_name, old_uid))[0]["count"] != 2:
                    await asyncio.sleep(0.1)
            assert len(found) == 1
            assert sink.stats.created == 1
            assert sink.stats.errors == 0
            every = await off_loop(core.list_namespaced_event, ns, field_selector="reason=NetworkPolicyDrop")
            assert len(every.items) == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            store.close()
