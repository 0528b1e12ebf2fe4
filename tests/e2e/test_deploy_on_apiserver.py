"""deploy/ on a real kube-apiserver: the server's own validation, admission and RBAC decide.

1. Every kustomization under deploy/ is rendered with `kubectl kustomize` and
   sent to the harness API server with `kubectl apply --dry-run=server`, so
   schemas, defaulting and admission (PodSecurity included) are the real
   server's, not a schema copy's.
2. The shipped RBAC (ServiceAccount, ClusterRole, ClusterRoleBinding of the
   hubble-node overlay) is applied for real, and the daemon runs in-process
   as the daemon's service-account identity with nothing else granted: it
   lists and watches all five kinds, explains a drop of a real pod and puts
   an Event on it, without a single 403; requests outside the role get 403.

Run: .venv/bin/python -m pytest -q tests/e2e/test_deploy_on_apiserver.py
(kubectl comes from scripts/install-test-tools.sh, cached; etcd and
kube-apiserver from scripts/build-k8s-binaries.sh, cached.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from drop_explainer import cli
from drop_explainer.hubble_pb import flow_pb2, observer_pb2
from drop_explainer.settings import Settings, from_args
from drop_explainer.sinks import events
from drop_explainer.testing.hubble_server import FakeHubbleServer
from tests.daemon_support import eventually, http_get, running
from tests.deploy.deploy_support import KUSTOMIZATIONS, OVERLAYS, REPO, Tools, objects, one, render
from tests.harness import kubelet
from tests.harness.apiserver import (
    DAEMON_GROUPS,
    DAEMON_NAMESPACE,
    DAEMON_SERVICE_ACCOUNT,
    DAEMON_USER,
    KubeApiServer,
)

pytestmark = pytest.mark.apiserver

# Stand-ins for the CRDs the manifests use. The real ones ship with Cilium
# (CiliumNetworkPolicy) and the Prometheus Operator (PodMonitor,
# PrometheusRule); the harness server has neither. These only make the kinds
# known to the server (group, version, plural, kind, namespaced) and accept
# any body, so the dry-run checks everything else for real.
STAND_IN_CRDS = (
    ("cilium.io", "v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies"),
    ("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors"),
    ("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
)
SINGLE_INSTANCE = ("overlays/hubble-relay", "overlays/calico-goldmane", "overlays/antrea")
"""Overlays whose pods meet Pod Security "restricted" (base/namespace.yaml says so)."""
NODE_OVERLAYS = ("overlays/hubble-node", "overlays/calico-node")
"""hostPath and uid 0: they lower "enforce" and keep warning against restricted."""
POD_SECURITY_WARNING = 'would violate PodSecurity "restricted'
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# ---- kubectl ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools() -> Tools:
    """kubectl from scripts/install-test-tools.sh (returns at once when it is built)."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "install-test-tools.sh")], capture_output=True,
                          text=True, timeout=1800, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/install-test-tools.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    kubectl = Path(done.stdout.strip().splitlines()[-1]) / "kubectl"
    # render() only runs kubectl; the Prometheus tools are not needed here.
    return Tools(kubectl=kubectl, promtool=Path("promtool"), prometheus=Path("prometheus"),
                 alertmanager=Path("alertmanager"))


@pytest.fixture(scope="module")
def kubectl(tools: Tools, kube_apiserver: KubeApiServer,
            tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run kubectl as the harness admin; objects (if given) go to its stdin as YAML."""
    # Our own discovery cache: one left from before the CRDs existed must not hide them.
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, docs: list[dict[str, Any]] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(tools.kubectl), "--kubeconfig", str(kube_apiserver.admin_kubeconfig), "--cache-dir", str(cache),
             "--request-timeout", "30s", *args],
            input=yaml.safe_dump_all(docs) if docs is not None else None,
            capture_output=True, text=True, timeout=60, check=False)

    return run


@pytest.fixture(scope="module")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    return {k: render(tools, k) for k in KUSTOMIZATIONS}


def stand_in_crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "versions": [{"name": version, "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def create_stand_in_crds(api: ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for spec in STAND_IN_CRDS:
        body = stand_in_crd(*spec)
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:  # made by an earlier module of this session
                raise
    deadline = time.monotonic() + 30
    for spec in STAND_IN_CRDS:
        name = f"{spec[3]}.{spec[0]}"
        while True:
            crd = kubelet.as_json(api, ext.read_custom_resource_definition(name))
            conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, f"CRD {name} never became Established: {conditions}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server_prepared(kube_apiserver: KubeApiServer, rendered: dict[str, list[dict[str, Any]]],
                    kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The stand-in CRDs, and the drop-explainer Namespace for real (namespaced dry-runs need it to exist).

    Applied, not just created: it may exist already (other tests), and its
    labels must be the base's (PodSecurity warn/enforce "restricted").
    """
    api = kube_apiserver.admin_api_client()
    try:
        create_stand_in_crds(api)
    finally:
        KubeApiServer.close_api_client(api)
    namespace = one(rendered["base"], "Namespace", DAEMON_NAMESPACE)
    done = kubectl("apply", "-f", "-", docs=[namespace])
    assert done.returncode == 0, f"applying the Namespace failed:\n{done.stderr}"


# ---- 1. every kustomization, server-side dry-run ----------------------------------------------


def test_the_stand_ins_cover_every_custom_kind_the_manifests_use(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Built-in groups have no dot (core, apps) or end in k8s.io; anything else needs a CRD here."""
    custom = {(d["apiVersion"], d["kind"]) for docs in rendered.values() for d in docs
              if "." in d["apiVersion"].split("/")[0] and not d["apiVersion"].split("/")[0].endswith("k8s.io")}
    assert custom == {(f"{g}/{v}", k) for g, v, k, _ in STAND_IN_CRDS}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_passes_a_server_side_dry_run(
        kustomization: str, rendered: dict[str, list[dict[str, Any]]], server_prepared: None,
        kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The real API server validates and admits every object; nothing is stored."""
    docs = rendered[kustomization]
    assert docs, f"deploy/{kustomization} rendered nothing"
    done = kubectl("apply", "--dry-run=server", "-f", "-", docs=docs)
    assert done.returncode == 0, f"dry-run of deploy/{kustomization} failed:\n{done.stderr}\n{done.stdout}"
    accepted = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), done.stdout
    if kustomization in SINGLE_INSTANCE:
        assert POD_SECURITY_WARNING not in done.stderr, done.stderr
    elif kustomization in NODE_OVERLAYS:
        assert POD_SECURITY_WARNING in done.stderr, "the node overlays are expected to warn against restricted"


def test_every_overlay_is_covered() -> None:
    assert {f"overlays/{o}" for o in OVERLAYS} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("overlay", [f"overlays/{o}" for o in OVERLAYS])
def test_the_pods_of_every_overlay_are_admitted_at_its_own_pod_security_level(
        overlay: str, rendered: dict[str, list[dict[str, Any]]], admin_api_client: ApiClient,
        kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """PodSecurity enforces on pods, not on DaemonSets: dry-run the pod the controller would create.

    In a namespace labelled as the overlay labels drop-explainer (the dry-run
    of the workload above only ever sees the real namespace's labels).
    """
    docs = rendered[overlay]
    [workload] = [d for d in docs if d["kind"] in ("DaemonSet", "Deployment")]
    template = workload["spec"]["template"]
    core = client.CoreV1Api(admin_api_client)
    ns = unique("podsec")
    kubelet.ensure_namespace(core, ns, one(docs, "Namespace")["metadata"]["labels"])
    kubelet.ensure_service_account(core, ns, template["spec"]["serviceAccountName"])
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
           "metadata": {**template["metadata"], "name": "explainer", "namespace": ns}}
    done = kubectl("create", "--dry-run=server", "-f", "-", docs=[pod])
    assert done.returncode == 0, f"the pod of deploy/{overlay} is not admitted:\n{done.stderr}"
    assert (POD_SECURITY_WARNING in done.stderr) == (overlay in NODE_OVERLAYS), done.stderr


# ---- 2. the shipped RBAC is exactly enough ---------------------------------------------------


def _binds_daemon(binding: Any) -> bool:
    for subject in binding.subjects or ():
        if subject.kind == "ServiceAccount" and (subject.namespace, subject.name) == (
                DAEMON_NAMESPACE, DAEMON_SERVICE_ACCOUNT):
            return True
        if (subject.kind == "User" and subject.name == DAEMON_USER) or (
                subject.kind == "Group" and subject.name in DAEMON_GROUPS):
            return True
    return False


@contextlib.contextmanager
def only_the_shipped_rbac(api: ApiClient, kubectl: Callable[..., subprocess.CompletedProcess[str]],
                          docs: list[dict[str, Any]]) -> Iterator[None]:
    """Apply the shipped RBAC for real; meanwhile set aside every other grant to the daemon's identity.

    Other tests bind their own roles to the same service account; left in
    place they would hide a permission missing from the shipped ClusterRole.
    The bootstrap bindings every cluster has (system:discovery, ...) stay.
    Everything is put back afterwards (and the shipped binding removed, as
    other tests take permissions away from the daemon and expect them gone).
    """
    rbac = client.RbacAuthorizationV1Api(api)
    ours = one(docs, "ClusterRoleBinding")["metadata"]["name"]
    # The daemon's own role, and the reader roles it ships for callers of its API (bound to nobody).
    roles = [d["metadata"]["name"] for d in objects(docs, "ClusterRole")]
    aside_cluster = [b for b in rbac.list_cluster_role_binding().items if _binds_daemon(b)
                     and b.metadata.name != ours
                     and (b.metadata.labels or {}).get("kubernetes.io/bootstrapping") != "rbac-defaults"]
    aside_ns = [b for b in rbac.list_role_binding_for_all_namespaces().items if _binds_daemon(b)
                and (b.metadata.labels or {}).get("kubernetes.io/bootstrapping") != "rbac-defaults"]
    for b in aside_cluster:
        rbac.delete_cluster_role_binding(b.metadata.name)
    for b in aside_ns:
        rbac.delete_namespaced_role_binding(b.metadata.name, b.metadata.namespace)
    try:
        done = kubectl("apply", "-f", "-", docs=[d for kind in RBAC_KINDS for d in objects(docs, kind)])
        assert done.returncode == 0, f"applying the shipped RBAC failed:\n{done.stderr}"
        yield
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(ours)
        for role in roles:
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role(role)
        for b in aside_cluster:
            rbac.create_cluster_role_binding(_fresh(api, b))
        for b in aside_ns:
            rbac.create_namespaced_role_binding(b.metadata.namespace, _fresh(api, b))


def _fresh(api: ApiClient, obj: Any) -> dict[str, Any]:
    body: dict[str, Any] = kubelet.as_json(api, obj)
    body["metadata"] = {k: v for k, v in body["metadata"].items()
                        if k in ("name", "namespace", "labels", "annotations")}
    return body


def wait_until_granted(api: ApiClient, timeout: float = 15.0) -> None:
    """The RBAC authorizer learns of a new binding through its informers: wait until it has."""
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    reads = (core.list_namespace, core.list_pod_for_all_namespaces, core.list_node,
             core.list_service_for_all_namespaces, net.list_network_policy_for_all_namespaces)
    deadline = time.monotonic() + timeout
    for read in reads:
        while True:
            try:
                read(limit=1)
                break
            except ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.fixture
def shipped_rbac(admin_api_client: ApiClient, daemon_api_client: ApiClient,
                 rendered: dict[str, list[dict[str, Any]]], server_prepared: None,
                 kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> Iterator[None]:
    """The hubble-node overlay's RBAC in force for the daemon's identity, and nothing else."""
    with only_the_shipped_rbac(admin_api_client, kubectl, rendered["overlays/hubble-node"]):
        wait_until_granted(daemon_api_client)
        yield


def daemon_settings(server: KubeApiServer, hubble_target: str, node: str) -> Settings:
    """As the DaemonSet runs it, but on loopback: no --state, Events on, the daemon's own kubeconfig."""
    args = cli.build_parser().parse_args([
        "run", "--listen", "127.0.0.1", "--port", "0", "--mode", "daemonset", "--node-name", node,
        "--kubeconfig", str(server.daemon_kubeconfig), "--events", "true", "--hubble-target", hubble_target,
        "--store-path", ":memory:", "--auth", "none"])
    return from_args(args, env={})


def workload(api: ApiClient, ns: str, node: str, net: str) -> None:
    """One object of each watched kind: client -> web is denied by web's default-deny ingress."""
    core = client.CoreV1Api(api)
    kubelet.ensure_namespace(core, ns)
    kubelet.create_node(core, node, "192.0.2.90", [f"{net}.0/24"])
    kubelet.create_pod(core, ns, "client", node_name=node, pod_ip=f"{net}.10", host_ip="192.0.2.90",
                       labels={"app": "client"})
    kubelet.create_pod(core, ns, "web", node_name=node, pod_ip=f"{net}.20", host_ip="192.0.2.90",
                       labels={"app": "web"}, containers=[kubelet.make_container("web", ports=[(8080, "http")])])
    svc: Any = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80,
                                                                                             "targetPort": "http"}]}}
    core.create_namespaced_service(ns, svc)
    pol: Any = {"metadata": {"name": "deny"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}
    client.NetworkingV1Api(api).create_namespaced_network_policy(ns, pol)


def dropped_syn(ns: str, node: str, net: str) -> observer_pb2.GetFlowsResponse:
    flow = flow_pb2.Flow(
        verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED, node_name=node,
        IP=flow_pb2.IP(source=f"{net}.10", destination=f"{net}.20", ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(TCP=flow_pb2.TCP(source_port=42000, destination_port=8080,
                                            flags=flow_pb2.TCPFlags(SYN=True))),
        source=flow_pb2.Endpoint(namespace=ns, pod_name="client", labels=["k8s:app=client"]),
        destination=flow_pb2.Endpoint(namespace=ns, pod_name="web", labels=["k8s:app=web"]),
        traffic_direction=flow_pb2.INGRESS, event_type=flow_pb2.CiliumEventType(type=1, sub_type=133))
    flow.time.FromNanoseconds(time.time_ns())
    return observer_pb2.GetFlowsResponse(flow=flow, node_name=node)


def drop_events(api: ApiClient, ns: str) -> list[dict[str, Any]]:
    found = kubelet.as_json(api, client.CoreV1Api(api).list_namespaced_event(ns))["items"]
    return [e for e in found if e["reason"] == events.REASON]


def forbidden_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.getMessage()} {r.__dict__}" for r in caplog.records
            if getattr(r, "status", None) == 403 or "forbidden" in f"{r.getMessage()} {r.__dict__}".lower()]


@pytest.mark.usefixtures("shipped_rbac")
async def test_the_daemon_needs_exactly_the_shipped_cluster_role(
        kube_apiserver: KubeApiServer, admin_api_client: ApiClient, caplog: pytest.LogCaptureFixture) -> None:
    """Ready (five kinds listed and watched), a real pod's drop explained and an Event on it, no 403."""
    caplog.set_level(logging.DEBUG, logger="drop_explainer")
    ns, node = unique("rbac"), unique("node")
    net = f"10.254.{uuid.uuid4().int % 256}"
    async with FakeHubbleServer(node_name=node) as hubble, \
            running(daemon_settings(kube_apiserver, hubble.target, node)) as daemon:
        port = daemon.port or 0
        ready = await eventually(lambda: _ok(port, "/readyz"))
        assert ready, f"never ready: {await http_get(port, '/readyz')}"
        # Made after the first lists: only the watches can bring them.
        await asyncio.to_thread(workload, admin_api_client, ns, node, net)
        state = daemon.state.snapshot
        assert await eventually(lambda: (
            ns in state().namespaces and node in state().nodes and f"{ns}/web" in state().pods
            and f"{ns}/client" in state().pods and f"{ns}/web" in state().services
            and f"{ns}/deny" in state().policies)), "a watch did not bring its object"

        await hubble.wait_for_followers()
        hubble.push(dropped_syn(ns, node, net))
        found = await eventually(lambda: asyncio.to_thread(drop_events, admin_api_client, ns))
        assert found, "no NetworkPolicyDrop Event on the pod"
        status, healthz = await http_get(port, "/healthz")
        _, drops = await http_get(port, f"/namespaces/{ns}/pods/web/drops?format=json")
        assert daemon.events is not None
        stats = daemon.events.stats
    [event] = found
    assert event["involvedObject"]["kind"] == "Pod"
    assert (event["involvedObject"]["namespace"], event["involvedObject"]["name"]) == (ns, "web")
    assert event["involvedObject"]["uid"]  # the daemon read the pod (get pods) to find it
    assert event["type"] == "Warning"
    assert event["source"]["component"] == events.COMPONENT
    assert "DENIED" in event["message"]
    assert f"{ns}/deny" in drops
    assert status == 200, healthz
    assert (stats.created, stats.errors) == (1, 0)
    assert {"cluster_state_ready", "event_created"} <= {r.getMessage() for r in caplog.records}
    assert forbidden_records(caplog) == []


async def _ok(port: int, path: str) -> bool:
    status, _ = await http_get(port, path)
    return status == 200


@pytest.mark.usefixtures("shipped_rbac")
def test_requests_outside_the_role_are_forbidden(admin_api_client: ApiClient, daemon_api_client: ApiClient) -> None:
    """With only the shipped role: no secrets, no configmaps, no pods made."""
    core = client.CoreV1Api(daemon_api_client)
    ns = unique("rbac-deny")
    kubelet.ensure_namespace(client.CoreV1Api(admin_api_client), ns)
    pod: Any = {"metadata": {"name": "p"}, "spec": {"containers": [kubelet.make_container("c")]}}
    attempts: dict[str, Callable[[], object]] = {
        "list secrets (cluster)": lambda: core.list_secret_for_all_namespaces(limit=1),
        "list secrets (namespace)": lambda: core.list_namespaced_secret(ns, limit=1),
        "list configmaps": lambda: core.list_namespaced_config_map(ns, limit=1),
        "create pod": lambda: core.create_namespaced_pod(ns, pod),
    }
    statuses = {}
    for what, attempt in attempts.items():
        with pytest.raises(ApiException) as err:
            attempt()
        statuses[what] = err.value.status
    assert statuses == dict.fromkeys(attempts, 403)
