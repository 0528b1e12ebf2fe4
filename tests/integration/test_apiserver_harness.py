"""Prove the real-apiserver harness works before the daemon's tests rely on it.

Run: python -m pytest -p tests.harness.fixtures tests/integration/test_apiserver_harness.py

Objects read back are compared as API JSON (`as_json`), so the assertions do
not depend on the generated attribute names of a particular client release.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.harness.apiserver import DAEMON_GROUPS, DAEMON_USER, KubeApiServer
from tests.harness.kubelet import as_json, create_node, create_pod, ensure_namespace, make_container

pytestmark = pytest.mark.apiserver


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _items(api: ApiClient, obj_list: object) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = as_json(api, obj_list)["items"]
    return items


def test_readyz_answers_ok(kube_apiserver: KubeApiServer) -> None:
    status, body = kube_apiserver.readyz()  # verifies TLS against the generated CA
    assert status == 200, body
    assert body.strip() == "ok"
    assert kube_apiserver.url.startswith("https://127.0.0.1:")


def test_admin_creates_and_lists_objects(admin_api_client: ApiClient) -> None:
    api = admin_api_client
    core = client.CoreV1Api(api)
    net = client.NetworkingV1Api(api)
    ns = _unique("harness-crud")
    node = _unique("node")

    ensure_namespace(core, ns, labels={"team": "payments"})
    create_node(core, node, "192.0.2.10", ["10.244.1.0/24"], labels={"zone": "a"})
    create_pod(
        core,
        ns,
        "web",
        node_name=node,
        pod_ip="10.244.1.5",
        host_ip="192.0.2.10",
        labels={"app": "web"},
        containers=[
            make_container("web", ports=[(8080, "http"), (9090, "metrics")], readiness_http_get=("http", "/healthz"))
        ],
    )
    service: Any = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    core.create_namespaced_service(ns, service)
    policy: Any = {
        "metadata": {"name": "allow-frontend"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                    "ports": [{"protocol": "TCP", "port": "http"}],
                }
            ],
        },
    }
    net.create_namespaced_network_policy(ns, policy)

    namespaces = {n["metadata"]["name"]: n for n in _items(api, core.list_namespace())}
    assert namespaces[ns]["metadata"]["labels"]["team"] == "payments"
    assert namespaces[ns]["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns  # set by the apiserver

    nodes = {n["metadata"]["name"]: n for n in _items(api, core.list_node())}
    assert nodes[node]["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    assert {"type": "InternalIP", "address": "192.0.2.10"} in nodes[node]["status"]["addresses"]

    pods = _items(api, core.list_namespaced_pod(ns))
    assert [p["metadata"]["name"] for p in pods] == ["web"]
    assert pods[0]["spec"]["nodeName"] == node
    ports = pods[0]["spec"]["containers"][0]["ports"]
    assert {p["name"]: p["containerPort"] for p in ports} == {"http": 8080, "metrics": 9090}

    services = _items(api, core.list_namespaced_service(ns))
    assert [s["metadata"]["name"] for s in services] == ["web"]
    assert services[0]["spec"]["clusterIP"].startswith("10.")  # allocated from 10.96.0.0/12

    policies = _items(api, net.list_namespaced_network_policy(ns))
    assert [p["metadata"]["name"] for p in policies] == ["allow-frontend"]
    assert policies[0]["spec"]["ingress"][0]["ports"][0]["port"] == "http"


def test_pod_status_via_status_subresource_is_visible(admin_api_client: ApiClient) -> None:
    api = admin_api_client
    core = client.CoreV1Api(api)
    ns = _unique("harness-status")
    node = _unique("node")
    ensure_namespace(core, ns)
    create_node(core, node, "192.0.2.11", ["10.244.2.0/24"])
    create_pod(core, ns, "db", node_name=node, pod_ip="10.244.2.7", host_ip="192.0.2.11", labels={"app": "db"})
    create_pod(core, ns, "pending", node_name=node, pod_ip=None, host_ip="192.0.2.11", phase="Pending")

    status = as_json(api, core.read_namespaced_pod("db", ns))["status"]
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.244.2.7"
    assert status["podIPs"] == [{"ip": "10.244.2.7"}]
    assert status["hostIP"] == "192.0.2.11"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"

    pending = as_json(api, core.read_namespaced_pod("pending", ns))["status"]
    assert pending["phase"] == "Pending"
    assert "podIP" not in pending


def _configmap_with_history(core: client.CoreV1Api, ns: str) -> str:
    """Create a ConfigMap, change it a few times; return its first resourceVersion."""
    ensure_namespace(core, ns)
    body: Any = {"metadata": {"name": "c"}, "data": {"v": "0"}}
    created = as_json(core.api_client, core.create_namespaced_config_map(ns, body))
    for i in range(1, 4):
        patch: Any = {"data": {"v": str(i)}}
        core.patch_namespaced_config_map("c", ns, patch)
    rv: str = created["metadata"]["resourceVersion"]
    return rv


def _first_watch_event(server: KubeApiServer, ns: str, resource_version: str) -> dict[str, Any]:
    """Open a raw HTTP watch from `resource_version` and return its first event.

    Raw HTTP on purpose: this checks the server, not a client's retry logic.
    An HTTP-level error is returned as a synthetic {"type": "HTTP"} event.
    """
    query = urllib.parse.urlencode({"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": "10"})
    req = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/{ns}/configmaps?{query}",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=server.ssl_context()) as resp:
            line = resp.readline()
    except urllib.error.HTTPError as exc:
        exc.close()
        return {"type": "HTTP", "object": {"code": exc.code}}
    event: dict[str, Any] = json.loads(line)
    return event


def test_watch_from_compacted_resource_version_gets_410_without_watch_cache(
    kube_apiserver_without_watch_cache: KubeApiServer,
) -> None:
    server = kube_apiserver_without_watch_cache
    api = server.admin_api_client()
    try:
        ns = _unique("harness-gone")
        old_rv = _configmap_with_history(client.CoreV1Api(api), ns)
        # before compaction: the changes after old_rv are replayed
        assert _first_watch_event(server, ns, old_rv)["type"] == "MODIFIED"

        assert server.compact_etcd() > int(old_rv)

        event = _first_watch_event(server, ns, old_rv)
        assert event["type"] in ("ERROR", "HTTP"), event
        assert event["object"]["code"] == 410, event
    finally:
        KubeApiServer.close_api_client(api)


def test_expire_resource_versions_gives_410_with_watch_cache(kube_apiserver: KubeApiServer) -> None:
    api = kube_apiserver.admin_api_client()
    try:
        ns = _unique("harness-expire")
        old_rv = _configmap_with_history(client.CoreV1Api(api), ns)
    finally:
        KubeApiServer.close_api_client(api)
    # Real-apiserver behaviour worth pinning: compaction alone is hidden by the watch cache.
    kube_apiserver.compact_etcd()
    assert _first_watch_event(kube_apiserver, ns, old_rv)["type"] == "MODIFIED"

    assert kube_apiserver.expire_resource_versions() > int(old_rv)

    event = _first_watch_event(kube_apiserver, ns, old_rv)
    assert event["type"] in ("ERROR", "HTTP"), event
    assert event["object"]["code"] == 410, event
    api = kube_apiserver.admin_api_client()  # the restart cut the old connections
    try:
        with pytest.raises(ApiException) as excinfo:
            client.CoreV1Api(api).list_namespaced_config_map(
                ns, resource_version=old_rv, resource_version_match="Exact"
            )
        assert excinfo.value.status == 410
    finally:
        KubeApiServer.close_api_client(api)


def test_daemon_identity_is_authenticated_but_rbac_forbids_secrets(daemon_api_client: ApiClient) -> None:
    review_body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    review = client.AuthenticationV1Api(daemon_api_client).create_self_subject_review(review_body)
    user_info = as_json(daemon_api_client, review)["status"]["userInfo"]
    assert user_info["username"] == DAEMON_USER
    assert set(DAEMON_GROUPS) <= set(user_info["groups"])

    with pytest.raises(ApiException) as excinfo:
        client.CoreV1Api(daemon_api_client).list_secret_for_all_namespaces()
    assert excinfo.value.status == 403


def test_restart_apiserver_keeps_data_and_port(kube_apiserver: KubeApiServer, admin_api_client: ApiClient) -> None:
    core = client.CoreV1Api(admin_api_client)
    ns = _unique("harness-restart")
    ensure_namespace(core, ns)
    body: Any = {"metadata": {"name": "keep"}, "data": {"k": "v"}}
    core.create_namespaced_config_map(ns, body)
    url = kube_apiserver.url

    kube_apiserver.restart_apiserver()

    assert kube_apiserver.url == url
    assert kube_apiserver.readyz()[0] == 200
    fresh = kube_apiserver.admin_api_client()  # new connections after the restart
    try:
        read = as_json(fresh, client.CoreV1Api(fresh).read_namespaced_config_map("keep", ns))
        assert read["data"] == {"k": "v"}
    finally:
        KubeApiServer.close_api_client(fresh)
