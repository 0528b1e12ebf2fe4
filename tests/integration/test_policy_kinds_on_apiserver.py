"""Policy kinds not evaluated, read from a real API server with their CRDs installed.

The CRDs are minimal stand-ins (any spec is kept) under the real group,
version and plural names, so the daemon's lists are the same requests it
makes in a cluster running Cilium or Calico. Calico's projectcalico.org/v3
API is not served here (no Calico API server), so its CRD form
crd.projectcalico.org/v1 is read instead.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from drop_explainer.cluster import kubeapi
from drop_explainer.explain import explaining
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine
from tests.harness.apiserver import KubeApiServer
from tests.harness.kubelet import create_node, create_pod, ensure_namespace

pytestmark = pytest.mark.apiserver

CRDS = (("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", "Namespaced"),
        ("crd.projectcalico.org", "v1", "globalnetworkpolicies", "GlobalNetworkPolicy", "Cluster"))


def install_crd(api: ApiClient, crd: tuple[str, str, str, str, str]) -> None:
    group, version, plural, kind, scope = crd
    ext = client.ApiextensionsV1Api(api)
    body: Any = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": scope, "names": {"plural": plural, "kind": kind},
                 "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(f"{plural}.{group}")
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return
        time.sleep(0.1)
    raise AssertionError(f"CRD {plural}.{group} not established")


def test_the_live_state_names_cilium_and_calico_policies_and_marks_answers_incomplete(
        kube_apiserver: KubeApiServer, admin_api_client: ApiClient) -> None:
    """A CNP selecting the destination and a Calico GNP, through their CRDs: kept, named, complete: false."""
    try:
        for crd in CRDS:
            install_crd(admin_api_client, crd)
        check_live_state(kube_apiserver, admin_api_client)
    finally:
        # CRDs are cluster-wide and would make enforcer detection see Cilium and Calico in other tests.
        ext = client.ApiextensionsV1Api(admin_api_client)
        for group, _, plural, _, _ in CRDS:
            try:
                ext.delete_custom_resource_definition(f"{plural}.{group}")
            except ApiException as exc:
                if exc.status != 404:
                    raise


def check_live_state(kube_apiserver: KubeApiServer, admin_api_client: ApiClient) -> None:
    tag = uuid.uuid4().hex[:6]
    ns, node = f"kinds-{tag}", f"node-{tag}"
    core = client.CoreV1Api(admin_api_client)
    ensure_namespace(core, ns)
    create_node(core, node, "192.0.2.70", ["10.252.0.0/24"])
    create_pod(core, ns, "web", node_name=node, pod_ip="10.252.0.2", host_ip="192.0.2.70", labels={"app": "web"})
    create_pod(core, ns, "client", node_name=node, pod_ip="10.252.0.3", host_ip="192.0.2.70")
    custom = client.CustomObjectsApi(admin_api_client)
    custom.create_namespaced_custom_object("cilium.io", "v2", ns, "ciliumnetworkpolicies", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "l4"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"fromEntities": ["world"]}]}})
    custom.create_cluster_custom_object("crd.projectcalico.org", "v1", "globalnetworkpolicies", {
        "apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": f"default.deny-{tag}"},
        "spec": {"selector": f"app == 'nothing-{tag}'", "order": 5, "types": ["Ingress"]}})

    state = kubeapi.list_state(kube_apiserver.admin_kubeconfig)
    names = {o.describe() for o in state.not_evaluated}
    assert f"CiliumNetworkPolicy {ns}/l4" in names
    assert f"Calico GlobalNetworkPolicy default.deny-{tag} (order 5)" in names
    assert f"{ns}/l4" not in state.policies
    engine = Engine(state)
    expl = explaining.explain_connection(engine, queries.connection(state, queries.Query(f"{ns}/client",
                                                                                        f"{ns}/web", 80)))
    assert expl.complete is False
    assert f"not evaluated: CiliumNetworkPolicy {ns}/l4 selects the destination pod {ns}/web" in expl.headline
    assert expl.not_evaluated == (f"CiliumNetworkPolicy {ns}/l4",)  # the GNP selects neither end
