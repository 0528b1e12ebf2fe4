"""EndpointSlices on a live cluster: the daemon's watches bring them, and answers use them.

Against a real kube-apiserver + etcd whose apiserver maintains
default/kubernetes's Endpoints and EndpointSlice itself (lease reconciler,
tests/harness/fixtures.py ``kube_apiserver_with_endpoints``): the slice holds
the advertised address and the apiserver's secure port, a random free port
here, as 6443 is on a kubeadm cluster; the Service says 443. No
EndpointSlice controller runs here, so a Service's slice is written as that
controller would write it, readiness included.

The daemon runs as its own service account with exactly the ClusterRole of
deploy/base/rbac.yaml, so a missing rule there fails these tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.settings import Settings
from drop_explainer.testing.hubble_server import FakeHubbleServer
from tests.daemon_support import eventually, get_json, http_get, run_settings, running
from tests.harness import kubelet
from tests.harness.apiserver import KubeApiServer
from tests.harness.fixtures import ADVERTISED_ADDRESS

pytestmark = pytest.mark.apiserver

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "base" / "rbac.yaml"
NODE_IP = "192.0.2.30"


@pytest.fixture(scope="module")
def server(kube_apiserver_with_endpoints: KubeApiServer) -> KubeApiServer:
    """The server with deploy/base's ClusterRole and binding for the daemon's service account."""
    api = kube_apiserver_with_endpoints.admin_api_client()
    try:
        rbac = client.RbacAuthorizationV1Api(api)
        for doc in yaml.safe_load_all(RBAC.read_text(encoding="utf-8")):
            create = {"ClusterRole": rbac.create_cluster_role,
                      "ClusterRoleBinding": rbac.create_cluster_role_binding}[doc["kind"]]
            try:
                create(doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise
    finally:
        KubeApiServer.close_api_client(api)
    return kube_apiserver_with_endpoints


@pytest.fixture
def admin(server: KubeApiServer) -> Iterator[ApiClient]:
    api = server.admin_api_client()
    try:
        yield api
    finally:
        KubeApiServer.close_api_client(api)


def settings_for(server: KubeApiServer, hubble_target: str, node: str) -> Settings:
    return run_settings("--kubeconfig", str(server.daemon_kubeconfig), "--hubble-target", hubble_target,
                        "--store-path", ":memory:", "--node-name", node)


def apiserver_slice(api: ApiClient) -> tuple[str, int]:
    """(address, port) of default/kubernetes's EndpointSlice, as the apiserver wrote it."""
    items = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes").items
    (only,) = items
    (endpoint,) = only.endpoints
    (port,) = only.ports
    return endpoint.addresses[0], port.port


async def _ready(port: int) -> bool:
    status, _ = await http_get(port, "/readyz")
    return status == 200


# ---- a what-if to a Service is judged at the EndpointSlice's ready backends ---------------------------------


def service_with_slice(api: ApiClient, tag: str) -> tuple[str, str]:
    """front-TAG/pod-a, and shop-TAG's Service api over api-1, api-2 (ready) and api-3 (not ready).

    Policies in shop admit front only to pods labelled role=primary: api-1 and api-3.
    """
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    front, shop, node = f"front-{tag}", f"shop-{tag}", f"node-{tag}"
    kubelet.ensure_namespace(core, front)
    kubelet.ensure_namespace(core, shop)
    kubelet.create_node(core, node, NODE_IP, ["10.251.0.0/24"])
    kubelet.create_pod(core, front, "pod-a", node_name=node, pod_ip="10.251.0.10", host_ip=NODE_IP,
                       labels={"app": "front"})
    for i, primary in ((1, True), (2, False), (3, True)):
        labels = {"app": "api"} | ({"role": "primary"} if primary else {})
        kubelet.create_pod(core, shop, f"api-{i}", node_name=node, pod_ip=f"10.251.0.{10 + i}", host_ip=NODE_IP,
                           labels=labels, containers=[kubelet.make_container("api", ports=[(8080, "http")])])
    core.create_namespaced_service(shop, {"metadata": {"name": "api"}, "spec": {
        "selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    net.create_namespaced_network_policy(shop, {"metadata": {"name": "deny-all"},
                                                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    net.create_namespaced_network_policy(shop, {"metadata": {"name": "allow-front-to-primary"}, "spec": {
        "podSelector": {"matchLabels": {"role": "primary"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": front}}}]}]}})
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(shop, slice_body(shop, {1: True, 2: True, 3: False}))
    return front, shop


def slice_body(ns: str, ready: dict[int, bool]) -> dict[str, Any]:
    """The EndpointSlice the EndpointSlice controller would write for Service api (named targetPort resolved)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "api-x7k2p", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": "api",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.251.0.{10 + i}"], "conditions": {"ready": ok},
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": f"api-{i}"}}
                          for i, ok in ready.items()]}


async def test_whatif_to_a_service_is_judged_at_the_ready_backends_of_its_live_endpoint_slice(
        server: KubeApiServer, admin: ApiClient) -> None:
    """1 of 2 ready backends allowed, the not-ready one counted apart; a readiness change reaches the answer."""
    tag = uuid.uuid4().hex[:6]
    front, shop = service_with_slice(admin, tag)
    path = f"/whatif?from={front}/pod-a&to=svc/{shop}/api&port=80"
    async with FakeHubbleServer(node_name="node") as hubble, \
            running(settings_for(server, hubble.target, f"node-{tag}")) as d:
        port = d.port or 0
        assert await eventually(lambda: _ready(port)), "the daemon never became ready"

        async def answer(total: int) -> dict[str, Any] | None:
            status, body = await get_json(port, path)
            return body if status == 200 and body["service"]["total_backends"] == total else None

        first = await eventually(lambda: answer(2))
        assert first, "the what-if never saw the EndpointSlice"
        svc = first["service"]
        assert svc["backends_from"] == "EndpointSlices"
        assert (svc["allowed_backends"], svc["total_backends"], svc["not_ready_endpoints"]) == (1, 2, 1)
        assert {(b["pod"], b["port"], b["allowed"]) for b in svc["backends"]} == {
            (f"{shop}/api-1", 8080, True), (f"{shop}/api-2", 8080, False)}
        assert first["allowed"] is False
        assert "allowed to 1 of 2 backend(s)" in first["explanation"]["headline"]
        assert any(n.startswith("1 endpoint(s) of the EndpointSlices are not ready")
                   for n in first["explanation"]["notes"])

        # api-3 becomes ready (and api-2 stays): the watch brings it, api-3 is judged and allowed.
        client.DiscoveryV1Api(admin).replace_namespaced_endpoint_slice(
            "api-x7k2p", shop, slice_body(shop, {1: True, 2: True, 3: True}))
        later = await eventually(lambda: answer(3))
        assert later, "the slice's change never reached the what-if"
        svc = later["service"]
        assert (svc["allowed_backends"], svc["total_backends"], svc["not_ready_endpoints"]) == (2, 3, 0)


# ---- an egress drop to the API server gets the fix to the EndpointSlice's address and port ------------------


def isolated_client(api: ApiClient, tag: str) -> str:
    """app-TAG/client on node-TAG, egress-isolated: every egress is denied."""
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    ns, node = f"app-{tag}", f"node-{tag}"
    kubelet.ensure_namespace(core, ns)
    kubelet.create_node(core, node, NODE_IP, ["10.252.0.0/24"])
    kubelet.create_pod(core, ns, "client", node_name=node, pod_ip="10.252.0.10", host_ip=NODE_IP,
                       labels={"app": "client"})
    net.create_namespaced_network_policy(ns, {"metadata": {"name": "deny-egress"},
                                              "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
    return ns


def egress_drop(ns: str, dst_ip: str, dst_port: int, src_port: int) -> observer_pb2.GetFlowsResponse:
    """Hubble's drop of client's SYN to the API server, after Service translation (reserved:kube-apiserver)."""
    flow = flow_pb2.Flow(
        verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED, node_name="node",
        IP=flow_pb2.IP(source="10.252.0.10", destination=dst_ip, ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(TCP=flow_pb2.TCP(source_port=src_port, destination_port=dst_port,
                                            flags=flow_pb2.TCPFlags(SYN=True))),
        source=flow_pb2.Endpoint(namespace=ns, pod_name="client", labels=["k8s:app=client"]),
        destination=flow_pb2.Endpoint(identity=7, labels=["reserved:kube-apiserver"]),
        traffic_direction=flow_pb2.EGRESS, event_type=flow_pb2.CiliumEventType(type=1, sub_type=133))
    flow.time.FromNanoseconds(time.time_ns())
    return observer_pb2.GetFlowsResponse(flow=flow, node_name="node")


def _egress_rules(fix: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for obj in fix["objects"] for rule in obj["spec"].get("egress", [])]


async def test_egress_drop_to_the_apiserver_gets_a_checked_fix_to_its_live_endpoint_slice(
        server: KubeApiServer, admin: ApiClient) -> None:
    """Fix: ipBlock of the slice's address on the apiserver's real port, not 10.96.0.1:443; applied, it admits."""
    address, real_port = await _slice(admin)
    assert address == ADVERTISED_ADDRESS
    assert real_port == server.port != 443
    tag = uuid.uuid4().hex[:6]
    ns = isolated_client(admin, tag)
    wanted = {"to": [{"ipBlock": {"cidr": f"{address}/32"}}], "ports": [{"protocol": "TCP", "port": real_port}]}
    async with FakeHubbleServer(node_name="node") as hubble, \
            running(settings_for(server, hubble.target, f"node-{tag}")) as d:
        port = d.port or 0
        assert await eventually(lambda: _ready(port)), "the daemon never became ready"
        await hubble.wait_for_followers()
        hubble.push(egress_drop(ns, address, real_port, 42000))

        async def drops() -> list[dict[str, Any]] | None:
            status, body = await get_json(port, f"/namespaces/{ns}/pods/client/drops")
            return body["drops"] if status == 200 and body["drops"] else None

        (drop,) = await eventually(drops) or [None]
        assert drop is not None, "the drop was never explained"
        expl = drop["explanation"]
        assert "apiserver-egress" in [t["id"] for t in expl["traps"]]
        fix = expl["fixes"][0]
        assert fix["verified"] is True
        assert _egress_rules(fix)[-1] == wanted

        # The what-if clients ask (the Service as they dial it, 10.96.0.1:443) gets the same fix: only the
        # live EndpointSlice says where the API server listens (without it no fix is offered at all).
        status, body = await get_json(port, f"/whatif?from={ns}/client&to=svc/default/kubernetes&port=443")
        assert status == 200, body
        assert body["service"]["backends_from"] == "EndpointSlices"
        assert [(b["ip"], b["port"]) for b in body["service"]["backends"]] == [(address, real_port)]
        (asked,) = body["explanation"]["fixes"][:1]
        assert asked["verified"] is True
        assert _egress_rules(asked)[-1] == wanted
        assert "10.96.0.1/" not in str(asked)

        # Applied as given, the next what-if is allowed at the API server's real address and port.
        obj = fix["objects"][0]
        net = client.NetworkingV1Api(admin)
        if obj["metadata"]["name"] == "deny-egress":
            net.replace_namespaced_network_policy("deny-egress", ns, {**obj, "metadata": {
                **obj["metadata"], "resourceVersion": None}})
        else:
            net.create_namespaced_network_policy(ns, obj)

        async def allowed() -> bool:
            status, body = await get_json(port, f"/whatif?from={ns}/client&to=svc/default/kubernetes&port=443")
            return status == 200 and body["allowed"] is True

        assert await eventually(allowed), "the applied fix never admitted the connection"


async def _slice(api: ApiClient) -> tuple[str, int]:
    """Waits for the apiserver's reconciler to have written the slice (it does so just after start)."""

    async def written() -> tuple[str, int] | None:
        try:
            return await asyncio.to_thread(apiserver_slice, api)
        except ValueError:  # not there yet: no item to unpack
            return None

    found = await eventually(written)
    assert found, "the apiserver never wrote default/kubernetes's EndpointSlice"
    return found
