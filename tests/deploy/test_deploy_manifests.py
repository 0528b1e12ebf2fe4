"""deploy/ rendered with kubectl kustomize: schema-valid, least privilege, and what each overlay needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_support import OVERLAYS, REPO, Tools, objects, one, render

from drop_explainer.cluster import kubeapi, unevaluated

K8S_VERSION = "1.36.0"
"""The Kubernetes version of the API-server harness (scripts/build-k8s-binaries.sh)."""
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule",
    ("cilium.io/v2", "CiliumNetworkPolicy"): "ciliumnetworkpolicy",
}
NODE_OVERLAYS = ("hubble-node", "calico-node")
"""DaemonSets with hostPath volumes: their namespace cannot enforce restricted (or baseline)."""
ROOT_OVERLAYS = ("hubble-node",)
"""Run as uid 0 with no capabilities: the Hubble socket's group is not known in advance (its manifest says why)."""
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
                        "capabilities": {"drop": ["ALL"]}}
STORE_OWNER = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0, "allowPrivilegeEscalation": False,
               "readOnlyRootFilesystem": True, "privileged": False,
               "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}
"""The DaemonSets' init container: root with CAP_CHOWN only, to hand the hostPath directories to 65532."""
CALICO_OVERLAYS = ("calico-node", "calico-goldmane")
"""Pending the Calico source (issue 8)."""
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
IMAGE = f"ghcr.io/drop-explainer/drop-explainer:{VERSION}"


def _workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("DaemonSet", "Deployment")]
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _workload(docs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_every_builtin_object_is_valid_for_kubernetes_1_36(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every rendered object of a built-in kind passes the strict 1.36 schema (unknown fields rejected)."""
    import kubernetes_validate

    checked = 0
    for kustomization, docs in rendered.items():
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"deploy/{kustomization}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
            checked += 1
    assert checked > 30


def test_custom_resources_match_their_crd_fields(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """PodMonitor, PrometheusRule and CiliumNetworkPolicy use only fields their CRDs define."""
    seen = set()
    for kustomization, docs in rendered.items():
        for doc in docs:
            name = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
            if name is None:
                continue
            schema = json.loads((Path(__file__).parent / "schemas" / f"{name}.schema.json").read_text())
            try:
                jsonschema.validate(doc, schema)
            except jsonschema.ValidationError as exc:
                pytest.fail(f"deploy/{kustomization}: {doc['kind']}: {exc.message} at {list(exc.absolute_path)}")
            seen.add(name)
    assert seen == set(CRD_SCHEMAS.values())


def _group_resource(path: str) -> tuple[str, str]:
    """("", "pods") for /api/v1/pods, ("discovery.k8s.io", "endpointslices") for /apis/discovery.k8s.io/v1/..."""
    parts = path.strip("/").split("/")
    return ("", parts[2]) if parts[0] == "api" else (parts[1], parts[3])


def test_rbac_is_read_only_on_six_kinds_and_writes_only_events(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The ClusterRole grants exactly what the daemon calls, and nothing on secrets."""
    role = one(rendered["base"], "ClusterRole", "drop-explainer")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    # Every kind the daemon watches (cluster/kubeapi.py RESOURCES) is listed and watched.
    watched = {(*_group_resource(r.path), v) for r in kubeapi.RESOURCES for v in ("list", "watch")}
    assert ("discovery.k8s.io", "endpointslices", "list") in watched
    assert watched <= granted
    # get on the five core kinds (sinks/events.py gets one pod; kubectl-style reads), not on EndpointSlices.
    read = watched | {(g, r, "get") for g, r in (("", "namespaces"), ("", "pods"), ("", "nodes"), ("", "services"),
                                                 ("networking.k8s.io", "networkpolicies"))}
    events = {("", "events", v) for v in ("create", "patch", "get")}
    # Enforcer detection (cluster/enforcer.py): list workloads and CRDs, get two CNI ConfigMaps by name.
    detection = {("apps", "daemonsets", "list"), ("apps", "deployments", "list"),
                 ("apiextensions.k8s.io", "customresourcedefinitions", "list"), ("", "configmaps", "get")}
    detection |= {("crd.antrea.io", r, "list") for r in ("tiers", "clusternetworkpolicies", "networkpolicies")}
    # --auth kubernetes: TokenReview and SubjectAccessReview, questions that store nothing.
    reviews = {("authentication.k8s.io", "tokenreviews", "create"),
               ("authorization.k8s.io", "subjectaccessreviews", "create")}
    # Policy kinds not evaluated, each list the daemon makes (cluster/unevaluated.py), list only.
    detection |= {(group, resource, "list") for group, _, resource, _ in unevaluated.LISTS}
    # Cilium policy kinds, evaluated: list and watch where served (kubeapi.CILIUM_RESOURCES).
    cilium = {("cilium.io", r.path.rpartition("/")[2], v) for r in kubeapi.CILIUM_RESOURCES for v in ("list", "watch")}
    assert granted == read | events | detection | reviews | cilium
    reader = one(rendered["base"], "ClusterRole", "drop-explainer-reader")
    assert reader["rules"] == [{"apiGroups": ["drop-explainer.io"], "resources": ["drops"], "verbs": ["get"]}]
    metrics = one(rendered["base"], "ClusterRole", "drop-explainer-metrics-reader")
    assert metrics["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    (configmaps,) = [rule for rule in role["rules"] if "configmaps" in rule["resources"]]
    assert sorted(configmaps["resourceNames"]) == ["antrea-config", "cilium-config"], "never every ConfigMap"
    binding = one(rendered["base"], "ClusterRoleBinding", "drop-explainer")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "drop-explainer", "namespace": "drop-explainer"}]
    for docs in rendered.values():
        assert not list(objects(docs, "Role")), "no namespaced Roles: everything is in the ClusterRole"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_is_hardened_pinned_and_probed(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Pinned image, restricted securityContext, probes on /healthz and /readyz, the starting resources."""
    docs = rendered[f"overlays/{overlay}"]
    pod = _workload(docs)["spec"]["template"]["spec"]
    c = _container(docs)
    assert c["image"] == IMAGE
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == RESTRICTED_CONTAINER
    if overlay in ROOT_OVERLAYS:  # a socket only root may open by default; owner permissions suffice
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsNonRoot"]) == (0, False)
    else:
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsNonRoot"]) == (65532, True)
    # The probes go to the probe port, answered off the event loop (api/probes.py), that the args open.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "probes", "containerPort": 8081, "protocol": "TCP"}]
    assert {"name": "DROP_EXPLAINER_PROBE_PORT", "value": "8081"} in c["env"]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "384Mi"}}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {"/var/lib/drop-explainer", "/tmp"} <= set(mounts), "the store and /tmp are the only writable paths"
    assert pod["serviceAccountName"] == "drop-explainer"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_match_the_service_and_the_peer_selector(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Service explainer:80 reaches the pods' 8080, and pods carry the daemon's default --peer-selector."""
    from drop_explainer import settings

    docs = rendered[f"overlays/{overlay}"]
    labels = _workload(docs)["spec"]["template"]["metadata"]["labels"]
    default = next(o.default for o in settings.OPTIONS if o.name == "peer-selector")
    key, _, value = default.partition("=")
    assert labels[key] == value
    service = one(docs, "Service", "explainer")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= labels.items()
    cluster_scoped = ("Namespace", "ClusterRole", "ClusterRoleBinding")
    cluster_scoped = ("Namespace", "ClusterRole", "ClusterRoleBinding")
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] not in cluster_scoped} == {"drop-explainer"}

def test_node_overlays_run_everywhere_with_their_sockets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """DaemonSets tolerate every taint, know their node, and mount exactly their socket (or socket directory).

    Hubble: the socket file alone, hostPath type Socket; /var/run/cilium also holds the agent's API socket.
    Calico: the directory, because the daemon creates the socket Felix connects to.
    """
    expected = {"hubble-node": ("/var/run/cilium/hubble.sock", True, "Socket"),
                "calico-node": ("/var/run/calico/flows", False, None)}
    for overlay, (path, read_only, kind) in expected.items():
        docs = rendered[f"overlays/{overlay}"]
        ds = one(docs, "DaemonSet")
        pod = ds["spec"]["template"]["spec"]
        assert pod["tolerations"] == [{"operator": "Exists"}]
        env = {e["name"]: e for e in _container(docs)["env"]}
        assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        host_paths = {v["hostPath"]["path"]: v["hostPath"].get("type") for v in pod["volumes"] if "hostPath" in v}
        assert set(host_paths) == {path, "/var/lib/drop-explainer"}
        if kind is not None:
            assert host_paths[path] == kind
        assert not any(p.startswith("/var/run/cilium") and p != path for p in host_paths), "never the directory"
        mount = next(m for m in _container(docs)["volumeMounts"] if m["mountPath"] == path)
        assert mount.get("readOnly", False) is read_only
        namespace = one(docs, "Namespace")["metadata"]["labels"]
        assert namespace["pod-security.kubernetes.io/enforce"] == "privileged", "hostPath needs it"
        assert namespace["pod-security.kubernetes.io/warn"] == "restricted"
        assert namespace["pod-security.kubernetes.io/audit"] == "restricted"
        # The store-owner init container hands every writable hostPath directory to the explainer's uid.
        (init,) = pod["initContainers"]
        writable = sorted(m["mountPath"] for m in _container(docs)["volumeMounts"]
                          if m["mountPath"] in host_paths and not m.get("readOnly", False))
        assert init["command"] == ["chown", "-R", "65532:65532", *writable]
        assert sorted(m["mountPath"] for m in init["volumeMounts"]) == writable


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("DaemonSet", "Deployment", "StatefulSet", "Job", "CronJob", "Pod")]


def test_every_rendered_workload_is_as_restricted_as_its_volumes_allow(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every container of every rendered workload: seccomp RuntimeDefault, no escalation, read-only root, no
    capabilities, non-root (uid 65532) except where the manifest says why not; restricted enforced where possible.

    Pod Security "restricted" forbids hostPath volumes, so the node overlays' namespace enforces privileged
    and says why; every other namespace of ours enforces restricted.
    """
    seen = 0
    for kustomization, docs in rendered.items():
        for workload in _workloads(docs):
            seen += 1
            name = kustomization.removeprefix("overlays/")
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, kustomization
            assert pod.get("hostNetwork", False) is False
            assert pod.get("hostPID", False) is False
            uid = (0, False) if name in ROOT_OVERLAYS else (65532, True)
            assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsNonRoot"]) == uid, name
            assert pod["securityContext"]["runAsGroup"] == uid[0]
            for c in pod["containers"]:
                assert c["securityContext"] == RESTRICTED_CONTAINER, f"{kustomization}: {c['name']}"
            for c in pod.get("initContainers", []):
                assert (c["name"], c["securityContext"]) == ("store-owner", STORE_OWNER), kustomization
            host_path = any("hostPath" in v for v in pod.get("volumes", []))
            assert host_path == (name in NODE_OVERLAYS), kustomization
            namespace = one(docs, "Namespace")["metadata"]["labels"]
            level = "privileged" if host_path else "restricted"
            assert namespace["pod-security.kubernetes.io/enforce"] == level, kustomization
    assert seen == len(OVERLAYS)
    assert one(rendered["base"], "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == \
        "restricted"
    # Where the manifest lowers the level or keeps root, it says why.
    for overlay in NODE_OVERLAYS:
        text = (REPO / "deploy" / "overlays" / overlay / "namespace.yaml").read_text(encoding="utf-8")
        assert "hostPath" in text
        assert "restricted" in text
    hubble = (REPO / "deploy" / "overlays" / "hubble-node" / "daemonset.yaml").read_text(encoding="utf-8")
    assert "Why uid 0" in hubble
    assert "supplementalGroups" in hubble


def test_single_instance_overlays_keep_their_store_on_a_volume(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """One replica, Recreate, and a PVC: a rescheduled pod must not forget every signature and page again."""
    for overlay in ("hubble-relay", "calico-goldmane", "antrea"):
        docs = rendered[f"overlays/{overlay}"]
        deploy = one(docs, "Deployment")
        assert deploy["spec"]["replicas"] == 1
        assert deploy["spec"]["strategy"] == {"type": "Recreate"}
        volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
        assert volumes["store"]["persistentVolumeClaim"]["claimName"] == one(docs, "PersistentVolumeClaim")[
            "metadata"]["name"]
        assert one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _args(docs: list[dict[str, Any]]) -> list[str]:
    return list(_container(docs)["args"])


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o not in CALICO_OVERLAYS])
def test_arguments_are_options_the_daemon_accepts(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """`drop-explainer run` parses the overlay's arguments and environment into settings."""
    _check_arguments(rendered[f"overlays/{overlay}"])


@pytest.mark.parametrize("overlay", CALICO_OVERLAYS)
def test_calico_arguments_are_options_the_daemon_accepts(overlay: str,
                                                         rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The Calico overlays' flags are options the daemon accepts."""
    _check_arguments(rendered[f"overlays/{overlay}"])


def _check_arguments(docs: list[dict[str, Any]]) -> None:
    args = _args(docs)
    assert args[0] == "run"
    env = {e["name"]: e.get("value", "") for e in _container(docs)["env"]}
    code = ("import sys; from drop_explainer import cli, settings; "
            "a = cli.build_parser().parse_args(sys.argv[1:]); print(settings.from_args(a))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "daemon"), **env,
                               "NODE_NAME": "node-1"}, timeout=60)
    assert done.returncode == 0, done.stderr


def test_hubble_overlays_point_at_their_source(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """hubble-node reads the node socket as a DaemonSet; hubble-relay reads the relay as one instance."""
    node = _args(rendered["overlays/hubble-node"])
    assert "--hubble-target=unix:///var/run/cilium/hubble.sock" in node
    assert "--mode=daemonset" in node
    relay = _args(rendered["overlays/hubble-relay"])
    assert "--hubble-target=hubble-relay.kube-system.svc:443" in relay
    assert "--hubble-tls-cert=/etc/hubble-relay-tls/tls.crt" in relay
    assert "--mode=single" in relay
    volumes = _workload(rendered["overlays/hubble-relay"])["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": "hubble-relay-client-certs", "defaultMode": 0o440} in [v.get("secret") for v in volumes]


def test_calico_overlays_select_their_source_and_mount_goldmane_tls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Felix's socket per node, or Goldmane with the client certificate from its Secret."""
    assert "--source=calico-felix" in _args(rendered["overlays/calico-node"])
    goldmane = rendered["overlays/calico-goldmane"]
    assert "--source=calico-goldmane" in _args(goldmane)
    volumes = _workload(goldmane)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "goldmane-tls", "secret": {"secretName": "drop-explainer-goldmane-tls", "defaultMode": 0o440}} \
        in volumes


def test_antrea_overlay_reads_the_flow_aggregator_stream_with_its_ca(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """FlowStreamService on 14740, server-side TLS verified against the aggregator's CA from a ConfigMap."""
    docs = rendered["overlays/antrea"]
    args = _args(docs)
    assert "--source=antrea" in args
    assert "--antrea-target=flow-aggregator.flow-aggregator.svc:14740" in args
    assert "--antrea-tls-ca=/etc/drop-explainer/antrea/ca.crt" in args
    volumes = _workload(docs)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "antrea-ca", "configMap": {"name": "drop-explainer-antrea-ca", "defaultMode": 0o444}} in volumes


def test_no_image_floats(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every image everywhere is pinned (no :latest, no missing tag)."""
    for docs in rendered.values():
        for doc in docs:
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                name, _, tag = c["image"].rpartition(":")
                assert name, c["image"]
                assert tag not in ("", "latest"), c["image"]


def test_versions_agree(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The image tag, the version labels and the Dockerfile agree with pyproject's version."""
    for kustomization, docs in rendered.items():
        for doc in docs:
            label = doc["metadata"].get("labels", {}).get("app.kubernetes.io/version")
            expected = None if kustomization == "grafana" else VERSION  # grafana/ is also imported alone
            assert label == expected, f"deploy/{kustomization}: {doc['kind']} {doc['metadata']['name']}: {label}"
    assert f"ARG VERSION={VERSION}" in (REPO / "Dockerfile").read_text()


@pytest.mark.parametrize("overlay", ["hubble-node", "hubble-relay"])
def test_the_api_tls_component_mounts_the_serving_secret_and_probes_over_https(
        overlay: str, tools: Tools, tmp_path: Path) -> None:
    """components/api-tls on a DaemonSet and on a Deployment: the Secret mounted, TLS flags valid, HTTPS probes."""
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    (tmp_path / "with-tls").mkdir()
    (tmp_path / "with-tls" / "kustomization.yaml").write_text(
        f"resources: [../deploy/overlays/{overlay}]\ncomponents: [../deploy/components/api-tls]\n")
    docs = render(tools, str(tmp_path / "with-tls"))
    container = _container(docs)
    assert "--tls-cert=/etc/drop-explainer/tls/tls.crt" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "api-tls", "mountPath": "/etc/drop-explainer/tls", "readOnly": True} in container["volumeMounts"]
    volumes = _workload(docs)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-tls", "secret": {"secretName": "drop-explainer-tls", "defaultMode": 0o440}} in volumes
    _check_arguments(docs)
