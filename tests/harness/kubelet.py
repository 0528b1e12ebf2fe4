"""Kubelet emulation: write Nodes and Pod status the way a kubelet would.

Why: the test API server has no kubelet, scheduler or controller-manager, so
pods never get an IP or a phase on their own. The daemon only ever *reads*
this state, so writing it through the same API paths a kubelet uses (Node
create/status, the pods/status subresource) gives it realistic objects.

All IPs here are plain data strings (e.g. 10.244.x.x pod IPs, 192.0.2.x node
IPs); no traffic is ever sent to them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: there is no kubelet

ContainerLike = Mapping[str, Any] | client.V1Container
PortSpec = int | tuple[int, str] | tuple[int, str, str]  # port | (port, name) | (port, name, protocol)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(manifest: Mapping[str, Any]) -> Any:
    """Pass a plain JSON manifest where the client's signature names a model class.

    Why: the API methods accept dicts at run time (old and new generated
    clients alike), and manifests read closer to YAML than model objects.
    """
    return dict(manifest)


def as_json(api: client.ApiClient, obj: object) -> Any:
    """A client model as the API's JSON (camelCase keys), independent of client version.

    Why: the generated attribute names change between client releases
    (e.g. ``pod_cid_rs`` vs ``pod_cidrs``); the wire names do not.
    """
    return cast(Any, api).sanitize_for_serialization(obj)


def _ignore_conflict(exc: ApiException) -> None:
    if exc.status != 409:
        raise exc


def ensure_namespace(
    core: client.CoreV1Api,
    name: str,
    labels: Mapping[str, str] | None = None,
) -> client.V1Namespace:
    """Create (or label) a namespace and its `default` ServiceAccount.

    Why the ServiceAccount: the ServiceAccount admission plugin rejects pods
    whose account does not exist, and without kube-controller-manager nobody
    creates `default` for us.
    """
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})))
    try:
        ns: client.V1Namespace = core.create_namespace(body)
    except ApiException as exc:
        _ignore_conflict(exc)
        ns = core.patch_namespace(name, {"metadata": {"labels": dict(labels or {})}})
    ensure_service_account(core, name, "default")
    return ns


def ensure_service_account(core: client.CoreV1Api, namespace: str, name: str) -> None:
    """Create a ServiceAccount if it is missing (what kube-controller-manager would do)."""
    try:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    except ApiException as exc:
        _ignore_conflict(exc)


def create_node(
    core: client.CoreV1Api,
    name: str,
    internal_ip: str,
    pod_cidrs: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    ready: bool = True,
) -> client.V1Node:
    """Register a Node like a kubelet: spec.podCIDR(s), then status addresses/conditions."""
    node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    node_labels.update(labels or {})
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": {"podCIDR": pod_cidrs[0] if pod_cidrs else None, "podCIDRs": list(pod_cidrs)},
    }
    if not pod_cidrs:
        del body["spec"]["podCIDR"]
    core.create_node(_body(body))
    return set_node_status(core, name, internal_ip, ready=ready)


def set_node_status(core: client.CoreV1Api, name: str, internal_ip: str, *, ready: bool = True) -> client.V1Node:
    """Write node addresses and the Ready condition through nodes/status."""
    now = _now()
    status = {
        "addresses": [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "KubeletReady" if ready else "KubeletNotReady",
                "message": "emulated by tests/harness/kubelet.py",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ],
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
    }
    node: client.V1Node = core.patch_node_status(name, {"status": status})
    return node


def make_container(
    name: str,
    *,
    ports: Sequence[PortSpec] = (),
    image: str = PAUSE_IMAGE,
    readiness_http_get: tuple[int | str, str] | None = None,
    liveness_tcp_port: int | str | None = None,
) -> dict[str, Any]:
    """A container dict with (optionally named) ports and probes.

    Named ports matter: NetworkPolicy `ports[].port` may be a name that is
    resolved per pod against these containerPorts.
    """
    container: dict[str, Any] = {"name": name, "image": image}
    port_list: list[dict[str, Any]] = []
    for spec in ports:
        if isinstance(spec, int):
            port_list.append({"containerPort": spec, "protocol": "TCP"})
        else:
            entry: dict[str, Any] = {"containerPort": spec[0], "name": spec[1], "protocol": "TCP"}
            if len(spec) == 3:
                entry["protocol"] = spec[2]
            port_list.append(entry)
    if port_list:
        container["ports"] = port_list
    if readiness_http_get is not None:
        container["readinessProbe"] = {
            "httpGet": {"port": readiness_http_get[0], "path": readiness_http_get[1]},
            "periodSeconds": 10,
        }
    if liveness_tcp_port is not None:
        container["livenessProbe"] = {"tcpSocket": {"port": liveness_tcp_port}, "periodSeconds": 10}
    return container


def _container_dict(api: client.ApiClient, container: ContainerLike) -> dict[str, Any]:
    if isinstance(container, client.V1Container):
        result: dict[str, Any] = as_json(api, container)
        return result
    return dict(container)


def create_pod(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    node_name: str,
    pod_ip: str | None,
    host_ip: str,
    labels: Mapping[str, str] | None = None,
    containers: Sequence[ContainerLike] | None = None,
    pod_ips: Sequence[str] | None = None,
    phase: str = "Running",
    ready: bool = True,
    host_network: bool = False,
    service_account: str = "default",
    owner_references: Sequence[Mapping[str, Any]] = (),
) -> client.V1Pod:
    """Create a pod already bound to `node_name`, then set its status like a kubelet.

    `owner_references` are written as given (the API server does not check that the owner exists; no
    controller runs here), e.g. the ReplicaSet a Deployment's pod belongs to.

    `pod_ip=None` leaves the pod without an IP (e.g. Pending, not yet sandboxed).
    """
    ensure_service_account(core, namespace, service_account)
    api = core.api_client
    spec_containers = [
        _container_dict(api, c) for c in (containers if containers is not None else [make_container("app")])
    ]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                     **({"ownerReferences": [dict(r) for r in owner_references]} if owner_references else {})},
        "spec": {
            "nodeName": node_name,
            "serviceAccountName": service_account,
            "hostNetwork": host_network,
            "containers": spec_containers,
        },
    }
    core.create_namespaced_pod(namespace, _body(body))
    return set_pod_status(
        core,
        namespace,
        name,
        pod_ip=pod_ip,
        host_ip=host_ip,
        pod_ips=pod_ips,
        phase=phase,
        ready=ready,
    )


def set_pod_status(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    pod_ip: str | None,
    host_ip: str,
    pod_ips: Sequence[str] | None = None,
    phase: str = "Running",
    ready: bool = True,
) -> client.V1Pod:
    """Patch pods/status: phase, hostIP(s), podIP(s), conditions, containerStatuses.

    Why the status subresource: it is the kubelet's write path; a plain pod
    update silently drops status changes.
    """
    pod = as_json(core.api_client, core.read_namespaced_pod(name, namespace))
    now = _now()
    running = phase == "Running"
    is_ready = ready and running
    ips = list(pod_ips) if pod_ips is not None else ([pod_ip] if pod_ip else [])
    if pod_ip and (not ips or ips[0] != pod_ip):
        ips.insert(0, pod_ip)  # the API requires podIPs[0] == podIP
    cond = "True" if is_ready else "False"
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": cond, "lastTransitionTime": now},
            {"type": "Ready", "status": cond, "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "containerID": f"containerd://{pod['metadata']['uid'].replace('-', '')}{i}",
                "ready": is_ready,
                "started": running,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}} if running else {"waiting": {"reason": "ContainerCreating"}},
            }
            for i, c in enumerate(pod["spec"]["containers"])
        ],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": ip} for ip in ips]
    patched: client.V1Pod = core.patch_namespaced_pod_status(name, namespace, {"status": status})
    return patched
