"""The daemon with a CiliumNetworkPolicy (evaluated) and a Calico policy (not): drops, what-ifs, metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from drop_explainer import demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

INCIDENT = demo.incident_dir()
CNP = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
       "metadata": {"name": "l7-backend", "namespace": "backend"},
       "spec": {"endpointSelector": {"matchLabels": {"app": "backend"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}],
                             "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}}
GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "odd"},
       "spec": {"selector": "app starts with 'x'", "types": ["Ingress"]}}


def gauge(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def test_drops_whatifs_and_metrics_name_the_policies_not_evaluated(tmp_path: Path) -> None:
    """The CNP is evaluated and named in the answer; the GNP (may select any pod) keeps answers incomplete."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    shutil.copy(INCIDENT / "cluster.yaml", state_dir / "cluster.yaml")
    (state_dir / "cni.yaml").write_text(yaml.safe_dump_all([CNP, GNP]), encoding="utf-8")
    settings = run_settings("--source", "replay", "--replay-file", str(INCIDENT / "hubble-flows.jsonl"),
                            "--store-path", ":memory:")
    async with running(settings, StaticState(load_state(state_dir))) as daemon:
        port = daemon.port or 0

        async def recorded() -> Any:
            status, body = await get_json(port, "/namespaces/backend/pods/pod-b/drops")
            return body if status == 200 and body["drops"] else None

        drops = await eventually(recorded)
        _, metrics = await http_get(port, "/metrics")
        status, answer = await get_json(port, "/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080")
    assert drops, "no drop of pod-b was recorded"
    for drop in drops["drops"]:
        expl = drop["explanation"]
        assert expl["complete"] is False
        assert "CiliumNetworkPolicy backend/l7-backend" not in expl["not_evaluated"]
        assert any(n.startswith("Calico GlobalNetworkPolicy odd") for n in expl["not_evaluated"])
    assert status == 200
    assert answer["allowed"] is False
    # policy-kinds.md 1.2: fromEndpoints in a CNP of namespace backend selects pods of backend only.
    assert answer["ingress"]["model"]["selecting"] == ["CiliumNetworkPolicy backend/l7-backend spec.ingress[0]"]
    assert "CiliumNetworkPolicy backend/l7-backend" in answer["explanation"]["headline"]
    assert gauge(metrics, "drop_explainer_policies_not_evaluated", group="cilium.io",
                 kind="CiliumNetworkPolicy") in (None, 0)
    assert gauge(metrics, "drop_explainer_policies_not_evaluated", group="projectcalico.org",
                 kind="GlobalNetworkPolicy") == 1
