"""The Grafana dashboard: one JSON file, shipped unchanged as the sidecar's ConfigMap, covering what the issue asks."""

from __future__ import annotations

from typing import Any

import deploy_support
from deploy_support import one

DS = {"type": "prometheus", "uid": "${datasource}"}


def test_configmap_is_the_json_file_for_the_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """kustomize generates the ConfigMap from the JSON file, byte for byte, labelled for the Grafana sidecar."""
    for kustomization in ("grafana", "monitoring"):
        cm = one(rendered[kustomization], "ConfigMap", "drop-explainer-dashboard")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["data"] == {"drop-explainer.json": deploy_support.DASHBOARD.read_text(encoding="utf-8")}


def test_variables_select_namespace_and_pod_from_the_drop_metric() -> None:
    """namespace and pod come from label_values of drops_total, multi-select with All as .*."""
    dash = deploy_support.dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert deploy_support.variable_queries(dash) == {
        "namespace": "label_values(drop_explainer_drops_total, namespace)",
        "pod": 'label_values(drop_explainer_drops_total{namespace=~"$namespace"}, pod)',
    }
    for name in ("namespace", "pod"):
        assert variables[name]["includeAll"]
        assert variables[name]["multi"]
        assert variables[name]["allValue"] == ".*"


def test_every_panel_queries_the_chosen_prometheus() -> None:
    """Each panel has targets on ${datasource}, unique ids and a place on the 24-column grid."""
    dash = deploy_support.dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in deploy_support.panels(dash):
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == DS
        assert all(t["datasource"] == DS for t in panel["targets"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_panels_cover_drops_signatures_health_latency_and_store() -> None:
    """What the issue asks the dashboard to show is there."""
    queries = [expr for _, expr in deploy_support.panel_queries(deploy_support.dashboard())]
    text = "\n".join(queries)
    for grouping in ("sum by (namespace)", "sum by (namespace, pod, direction)", "sum by (policy)", "sum by (trap)"):
        assert any(grouping in q and "drop_explainer_drops_total" in q for q in queries), grouping
    assert any(q.startswith("topk(") and "by (policy)" in q for q in queries)
    for metric in ("drop_explainer_new_drop_signatures_total", "drop_explainer_source_connected",
                   "drop_explainer_flow_lag_seconds", "drop_explainer_cluster_synced",
                   "drop_explainer_flows_malformed_total", "drop_explainer_source_reconnects_total",
                   "drop_explainer_queue_overflow_total", "drop_explainer_explain_duration_seconds_bucket",
                   "drop_explainer_store_signatures", "drop_explainer_store_evictions_total"):
        assert metric in text, metric
    for q in queries:
        if "drop_explainer_drops_total" in q or "drop_explainer_new_drop_signatures_total" in q:
            assert 'namespace=~"$namespace", pod=~"$pod"' in q, q


def test_dashboard_uses_only_metrics_the_daemon_exposes() -> None:
    """A renamed metric fails here, not as an empty panel in production."""
    known = deploy_support.daemon_metric_names()
    dash = deploy_support.dashboard()
    used = {m for _, q in deploy_support.panel_queries(dash) for m in deploy_support.METRIC.findall(q)}
    used |= {m for q in deploy_support.variable_queries(dash).values() for m in deploy_support.METRIC.findall(q)}
    assert used <= known, used - known
