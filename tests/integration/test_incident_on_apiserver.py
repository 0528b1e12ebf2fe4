"""The seed incident built as real objects on a real API server, explained by the CLI and the daemon.

The kubelet's part is emulated (pod status through the status subresource,
node addresses), everything else is the real thing: kube-apiserver with
etcd, our list/watch client, the daemon's pipeline over HTTP. A fix applied
through the API changes the next explanation, as it would in a cluster.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from drop_explainer import cli
from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.settings import Settings
from drop_explainer.testing.hubble_server import FakeHubbleServer
from tests.daemon_support import eventually, get_json, http_get, run_settings, running
from tests.harness import kubelet
from tests.harness.apiserver import KubeApiServer

pytestmark = pytest.mark.apiserver


def incident(api: ApiClient, tag: str, *, selector: dict[str, str]) -> tuple[str, str]:
    """frontend-TAG/pod-a and backend-TAG/pod-b on node-TAG; backend's default-deny admits ``selector``."""
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    frontend, backend, node = f"frontend-{tag}", f"backend-{tag}", f"node-{tag}"
    kubelet.ensure_namespace(core, frontend)
    kubelet.ensure_namespace(core, backend)
    kubelet.create_node(core, node, "192.0.2.10", ["10.250.0.0/24"])
    kubelet.create_pod(core, frontend, "pod-a", node_name=node, pod_ip="10.250.0.10", host_ip="192.0.2.10",
                       labels={"app": "frontend"}, containers=[kubelet.make_container("web", ports=[80])])
    kubelet.create_pod(core, backend, "pod-b", node_name=node, pod_ip="10.250.0.20", host_ip="192.0.2.10",
                       labels={"app": "backend"},
                       containers=[kubelet.make_container("api", ports=[(8080, "http")])])
    net.create_namespaced_network_policy(backend, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": backend},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": selector}}]}]}})
    return frontend, backend


def whatif(kube_apiserver: KubeApiServer, frontend: str, backend: str) -> dict[str, Any]:
    """drop-explainer whatif without --state: the cluster of the kubeconfig, as kubectl users expect."""
    out = io.StringIO()
    cli.main(["whatif", "--kubeconfig", str(kube_apiserver.admin_kubeconfig), "--from", f"{frontend}/pod-a",
              "--to", f"{backend}/pod-b", "--port", "8080", "-o", "json"], out=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def test_cli_reads_the_live_cluster_and_a_label_fix_applied_through_the_api_changes_the_answer(
        kube_apiserver: KubeApiServer, admin_api_client: ApiClient) -> None:
    """The name= trap on real objects: denied with a label fix; after kubectl label, allowed."""
    tag = uuid.uuid4().hex[:6]
    frontend, backend = incident(admin_api_client, tag, selector={"name": f"frontend-{tag}"})
    before = whatif(kube_apiserver, frontend, backend)
    assert before["allowed"] is False
    assert [p["name"] for p in before["ingress"]["policies"]] == ["default-deny"]
    assert before["ingress"]["policies"][0]["resourceVersion"]  # a real resourceVersion from etcd
    expl = before["explanation"]
    assert [t["id"] for t in expl["traps"]] == ["namespace-label-missing"]
    fix = expl["fixes"][0]
    assert fix["kind"] == "label-namespace"
    assert fix["apply"].strip() == f"kubectl label namespace {frontend} name={frontend}"
    labels = fix["namespace_labels"][0]["labels"]
    client.CoreV1Api(admin_api_client).patch_namespace(frontend, {"metadata": {"labels": labels}})
    after = whatif(kube_apiserver, frontend, backend)
    assert after["allowed"] is True
    assert after["ingress"]["allowed_by"][0]["name"] == "default-deny"


def settings_for(kube_apiserver: KubeApiServer, hubble_target: str, node: str) -> Settings:
    return run_settings("--kubeconfig", str(kube_apiserver.admin_kubeconfig), "--hubble-target", hubble_target,
                        "--store-path", ":memory:", "--node-name", node)


def syn(frontend: str, backend: str, port: int, at_ns: int) -> observer_pb2.GetFlowsResponse:
    """The drop Hubble reports for pod-a's SYN to pod-b (labels as Cilium writes them)."""
    flow = flow_pb2.Flow(
        verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED, node_name="node",
        IP=flow_pb2.IP(source="10.250.0.10", destination="10.250.0.20", ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(TCP=flow_pb2.TCP(source_port=port, destination_port=8080,
                                            flags=flow_pb2.TCPFlags(SYN=True))),
        source=flow_pb2.Endpoint(namespace=frontend, pod_name="pod-a", labels=["k8s:app=frontend"]),
        destination=flow_pb2.Endpoint(namespace=backend, pod_name="pod-b", labels=["k8s:app=backend"]),
        traffic_direction=flow_pb2.INGRESS, event_type=flow_pb2.CiliumEventType(type=1, sub_type=133))
    flow.time.FromNanoseconds(at_ns)
    return observer_pb2.GetFlowsResponse(flow=flow, node_name="node")


async def test_daemon_explains_a_recorded_drop_and_a_policy_fix_through_the_api_changes_the_next_one(
        kube_apiserver: KubeApiServer, admin_api_client: ApiClient) -> None:
    """Watches -> explanation naming the real policy; the fix applied via the API -> the engine now disagrees."""
    tag = uuid.uuid4().hex[:6]
    frontend, backend = incident(admin_api_client, tag, selector={"kubernetes.io/metadata.name": "kube-system"})
    async with FakeHubbleServer(node_name="node") as hubble, \
            running(settings_for(kube_apiserver, hubble.target, f"node-{tag}")) as d:
        assert d.port is not None
        ready = await eventually(lambda: _is_ready(d.port or 0))
        assert ready, "the daemon never became ready against the real API server"
        await hubble.wait_for_followers()
        hubble.push(syn(frontend, backend, 41000, time.time_ns()))
        path = f"/namespaces/{backend}/pods/pod-b/drops"
        first = await eventually(lambda: _drops(d.port or 0, path, 1))
        expl = first[0]["explanation"]
        assert expl["denying"][0]["name"] == "default-deny"
        assert expl["closest"]["rule"] == 0
        assert expl["denying"][0]["rules"][0]["failures"][0]["clause"] == "namespace-selector"
        fix = expl["fixes"][0]
        assert fix["verified"] is True
        # Apply the suggested object through the API, as `kubectl apply` would.
        obj = fix["objects"][0]
        client.NetworkingV1Api(admin_api_client).replace_namespaced_network_policy(
            "default-deny", backend, {**obj, "metadata": {**obj["metadata"], "resourceVersion": None}})

        async def engine_allows() -> bool:
            status, body = await get_json(d.port or 0, f"/whatif?from={frontend}/pod-a&to={backend}/pod-b&port=8080")
            return status == 200 and body["allowed"] is True

        assert await eventually(engine_allows), "the watch never brought the fixed policy"
        hubble.push(syn(frontend, backend, 41001, time.time_ns()))
        both = await eventually(lambda: _drops(d.port or 0, path, 2))
    late = next(x for x in both if x["signature"]["policies"] == [])
    assert late["explanation"]["agreement"]["agrees"] is False  # dropped by the CNI, allowed by the new policy
    assert any("stale" in c or "delay" in c for c in late["explanation"]["agreement"]["causes"])


async def _is_ready(port: int) -> bool:
    status, _ = await http_get(port, "/readyz")
    return status == 200


async def _drops(port: int, path: str, count: int) -> list[dict[str, Any]] | None:
    status, body = await get_json(port, path)
    return body["drops"] if status == 200 and len(body["drops"]) >= count else None
