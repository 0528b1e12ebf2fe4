"""A flannel-alone cluster on the real API server: answers lead with "not enforced", one Event per new policy.

Its own etcd + kube-apiserver: flannel's DaemonSet changes what every
explanation says, so it must not leak into the shared one.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from drop_explainer import cli
from drop_explainer.testing.hubble_server import FakeHubbleServer
from tests.daemon_support import eventually, get_json, http_get, run_settings, running
from tests.harness import kubelet
from tests.harness.apiserver import KubeApiServer
from tests.harness.fixtures import _serve
from tests.integration.test_incident_on_apiserver import incident

pytestmark = pytest.mark.apiserver

RECORDED = Path(__file__).parents[2] / "unit" / "cluster" / "recorded" / "enforcers" / "flannel-alone.yaml"
NOTE = ("NetworkPolicy objects exist, but this cluster's network (flannel) does not enforce them: "
        "this connection is not blocked by policy.")


@pytest.fixture(scope="module")
def flannel_apiserver(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    yield from _serve(pytestconfig, tmp_path_factory.mktemp("flannel-apiserver"), watch_cache=True)


@pytest.fixture(scope="module")
def flannel_cluster(flannel_apiserver: KubeApiServer) -> Iterator[tuple[str, str]]:
    """The incident's objects plus flannel's DaemonSet as kube-flannel.yml creates it (no enforcer)."""
    api = flannel_apiserver.admin_api_client()
    try:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        recorded = yaml.safe_load(RECORDED.read_text(encoding="utf-8"))["items"]
        ds = next(o for o in recorded if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "kube-flannel-ds")
        kubelet.ensure_namespace(core, "kube-flannel")
        labels = ds["metadata"]["labels"]
        apps.create_namespaced_daemon_set("kube-flannel", {
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": ds["metadata"],
            "spec": {"selector": {"matchLabels": {"app": labels["app"]}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [
                                      {**c, "image": c.get("image", "ghcr.io/flannel-io/flannel:v0.26.7")}
                                      for c in ds["spec"]["template"]["spec"]["containers"]]}}}})
        tag = uuid.uuid4().hex[:6]
        frontend, backend = incident(api, tag, selector={"kubernetes.io/metadata.name": "kube-system"})
        core.patch_node(f"node-{tag}", {"metadata": {"annotations": {
            "flannel.alpha.coreos.com/backend-type": "vxlan", "flannel.alpha.coreos.com/kube-subnet-manager": "true"}}})
        yield frontend, backend
    finally:
        KubeApiServer.close_api_client(api)


def test_cli_whatif_on_the_live_cluster_leads_with_not_enforced(
        flannel_apiserver: KubeApiServer, flannel_cluster: tuple[str, str]) -> None:
    frontend, backend = flannel_cluster
    ask = ["whatif", "--kubeconfig", str(flannel_apiserver.admin_kubeconfig), "--from", f"{frontend}/pod-a",
           "--to", f"{backend}/pod-b", "--port", "8080"]
    out = io.StringIO()
    assert cli.main(ask, out=out) == 0
    assert out.getvalue().startswith(f"NOT ENFORCED: {NOTE} If policy were enforced: DENIED")
    out = io.StringIO()
    cli.main([*ask, "-o", "json"], out=out)
    answer = json.loads(out.getvalue())
    assert (answer["allowed"], answer["enforced"], answer["would_be_allowed"]) == (True, False, False)


async def test_daemon_leads_with_not_enforced_exports_it_and_announces_a_new_policy_once(
        flannel_apiserver: KubeApiServer, flannel_cluster: tuple[str, str]) -> None:
    frontend, backend = flannel_cluster
    async with FakeHubbleServer(node_name="node") as hubble, running(_settings(flannel_apiserver, hubble.target)) as d:
        port = d.port or 0
        ready = await eventually(lambda: _ready_text(port, "policy enforcer: none"), timeout=60)
        assert ready is not None, "readyz never named the enforcer"
        assert "flannel does not enforce NetworkPolicy" in ready
        status, text = await http_get(port, f"/whatif?from={frontend}/pod-a&to={backend}/pod-b&port=8080")
        assert status == 200
        assert text.startswith(f"NOT ENFORCED: {NOTE} If policy were enforced: DENIED")
        _, answer = await get_json(port, f"/whatif?from={frontend}/pod-a&to={backend}/pod-b&port=8080")
        assert (answer["allowed"], answer["enforced"], answer["would_be_allowed"]) == (True, False, False)
        _, metrics = await http_get(port, "/metrics")
        assert 'drop_explainer_policy_enforcer{certain="true",enforcer="none",profile="spec"} 1.0' in metrics
        assert "drop_explainer_policies_not_enforced 1.0" in metrics

        # A policy created now gets one Event, on the policy, from this and any later instance.
        api = flannel_apiserver.admin_api_client()
        try:
            net, core = client.NetworkingV1Api(api), client.CoreV1Api(api)
            net.create_namespaced_network_policy(frontend, {
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny-all-egress", "namespace": frontend},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
            uid = net.read_namespaced_network_policy("deny-all-egress", frontend).metadata.uid
            events = await eventually(lambda: _policy_events(core, frontend, "deny-all-egress"), timeout=30)
            assert events, "no PolicyNotEnforced Event on the new policy"
            # Several more polls of the tracker: still one Event, count 1.
            tracker = d.enforcer
            assert tracker is not None
            await asyncio.sleep(3 * tracker.settings.poll_s)
            (event,) = _policy_events(core, frontend, "deny-all-egress")
            assert event.count == 1
            assert event.type == "Warning"
            assert event.involved_object.kind == "NetworkPolicy"
            assert event.involved_object.uid == uid
            assert "does not enforce them" in event.message
            assert tracker.stats.events_created == 1
            assert _policy_events(core, backend, "default-deny") == [], "policies from before the start: metric only"
        finally:
            KubeApiServer.close_api_client(api)

    # A restarted daemon (same Event name) does not make a second one.
    async with FakeHubbleServer(node_name="node") as hubble, running(_settings(flannel_apiserver, hubble.target)) as d2:
        assert await eventually(lambda: _ready_text(d2.port or 0, "policy enforcer: none"), timeout=60)
        assert d2.enforcer is not None
        # What a restart while announcing does: write the same policy's Event again; the name is the same.
        pol = await eventually(lambda: d2.state.snapshot().policies.get(f"{frontend}/deny-all-egress"))
        await d2.enforcer._create_event(frontend, "deny-all-egress", pol.creation_timestamp or "")
        assert (d2.enforcer.stats.events_existing, d2.enforcer.stats.events_created) == (1, 0)
        api = flannel_apiserver.admin_api_client()
        try:
            assert len(_policy_events(client.CoreV1Api(api), frontend, "deny-all-egress")) == 1
        finally:
            KubeApiServer.close_api_client(api)


def _settings(server: KubeApiServer, hubble_target: str) -> Any:
    return run_settings("--kubeconfig", str(server.admin_kubeconfig), "--store-path", ":memory:",
                        "--node-name", "node-flannel", "--hubble-target", hubble_target)


def test_events_can_be_switched_off() -> None:
    settings = run_settings("--not-enforced-events", "false", "--state", "example")
    assert settings.not_enforced_events is False


async def _ready_text(port: int, needle: str) -> str | None:
    status, text = await http_get(port, "/readyz")
    return text if status == 200 and needle in text else None


def _policy_events(core: client.CoreV1Api, namespace: str, name: str) -> list[Any]:
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in items if e.reason == "PolicyNotEnforced"]
