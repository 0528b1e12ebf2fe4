"""Policy kinds read from a real API server with their CRDs installed: Cilium's evaluated, Calico's named.

The CRDs are minimal stand-ins (any spec is kept) under the real group,
version and plural names, so the daemon's lists and watches are the same
requests it makes in a cluster running Cilium or Calico (Cilium's published
CRD schemas could not be fetched here: cilium/cilium is not available to
this build). Calico's projectcalico.org/v3
API is not served here (no Calico API server), so its CRD form
crd.projectcalico.org/v1 is read instead.
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
from kubernetes.client.exceptions import ApiException

from drop_explainer.cluster import kubeapi, live, watching
from drop_explainer.explain import explaining
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine
from tests.harness.apiserver import KubeApiServer
from tests.harness.kubelet import create_node, create_pod, ensure_namespace

pytestmark = pytest.mark.apiserver

CRDS = (("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", "Namespaced"),
        ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", "Cluster"),
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


def test_the_live_state_evaluates_cilium_policies_and_names_calico_ones(
        kube_apiserver: KubeApiServer, admin_api_client: ApiClient) -> None:
    """A CNP selecting the destination is evaluated; a Calico GNP is named; then the watch follows CNP changes."""
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
    assert f"Calico GlobalNetworkPolicy default.deny-{tag} (order 5)" in names
    assert not any(n.startswith("CiliumNetworkPolicy") for n in names)  # evaluated now
    assert [c.describe() for c in state.compiled.values()] == [f"CiliumNetworkPolicy {ns}/l4"]
    engine = Engine(state)
    expl = explaining.explain_connection(engine, queries.connection(state, queries.Query(f"{ns}/client",
                                                                                        f"{ns}/web", 80)))
    assert expl.verdict.allowed is False  # fromEntities: [world] does not admit a pod (policy-kinds.md 1.4)
    assert expl.complete is True  # the GNP selects neither end
    assert f"ingress of {ns}/web is isolated by CiliumNetworkPolicy {ns}/l4 and no rule admits it" in expl.headline
    asyncio.run(follow_cilium_policies(kube_apiserver, custom, ns, tag))


async def follow_cilium_policies(kube_apiserver: KubeApiServer, custom: client.CustomObjectsApi, ns: str,
                                 tag: str) -> None:
    """The live watch: CNP/CCNP changes reach the snapshot; an invalid one is refused, not fatal."""
    settings = live.LiveSettings(watch=watching.WatchSettings(timeout_s=30, backoff_initial_s=0.1,
                                                              backoff_max_s=1.0), min_interval_s=0.1)
    async with kubeapi.Client(kubeapi.load_endpoint(kube_apiserver.admin_kubeconfig)) as api:
        state = live.LiveState(api, settings=settings)
        task = asyncio.create_task(state.run())
        try:
            await asyncio.wait_for(state.wait_ready(), 60)
            assert {"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"} <= set(state.synced)

            def verdict() -> bool:
                snap = state.snapshot()
                return Engine(snap).evaluate(queries.connection(snap, queries.Query(f"{ns}/client", f"{ns}/web",
                                                                                    80))).allowed

            assert verdict() is False
            await asyncio.to_thread(custom.create_cluster_custom_object, "cilium.io", "v2",
                                    "ciliumclusterwidenetworkpolicies", {
                                        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                                        "metadata": {"name": f"cluster-{tag}"},
                                        "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                                                 "ingress": [{"fromEntities": ["cluster"]}]}})
            await eventually(verdict, True)
            await asyncio.to_thread(custom.create_namespaced_custom_object, "cilium.io", "v2", ns,
                                    "ciliumnetworkpolicies", {
                                        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                                        "metadata": {"name": "empty"},
                                        "spec": {"endpointSelector": {}}})
            await eventually(lambda: [r.describe() for r in state.snapshot().refused],
                             [f"CiliumNetworkPolicy {ns}/empty: field spec: rule must have at least one of Ingress, "
                              "IngressDeny, Egress, EgressDeny"])
            await asyncio.to_thread(custom.delete_cluster_custom_object, "cilium.io", "v2",
                                    "ciliumclusterwidenetworkpolicies", f"cluster-{tag}")
            await eventually(verdict, False)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(probe: Any, expected: object, timeout_s: float = 30.0) -> None:
    """Bounded wait for the debounced snapshot to show ``expected``."""
    deadline = time.monotonic() + timeout_s
    while (got := probe()) != expected:
        assert time.monotonic() < deadline, f"still {got!r}, expected {expected!r}"
        await asyncio.sleep(0.05)
