"""Helpers shared by the deploy tests: rendering, metric names the daemon exposes, the dashboard's queries."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("hubble-node", "hubble-relay", "calico-node", "calico-goldmane", "antrea")
KUSTOMIZATIONS = ("base", *(f"overlays/{o}" for o in OVERLAYS), "monitoring", "grafana")


@dataclass(frozen=True)
class Tools:
    kubectl: Path
    promtool: Path
    prometheus: Path
    alertmanager: Path


def render(tools: Tools, kustomization: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/<kustomization>` (or an absolute directory), as objects."""
    done = subprocess.run([str(tools.kubectl), "kustomize", str(DEPLOY / kustomization)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize deploy/{kustomization} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def objects(docs: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] == kind)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


DASHBOARD = DEPLOY / "grafana" / "drop-explainer.json"
METRIC = re.compile(r"\bdrop_explainer_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created")}

# Grafana's built-in variables, as a panel would get them on a 1-second scrape.
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def exposed_names(exposition: str) -> set[str]:
    """Every sample name a /metrics text can carry, including families that have no samples yet."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def daemon_metric_names() -> set[str]:
    """What MetricsSink registers, read from a fresh registry (labelled families show as HELP/TYPE only)."""
    from drop_explainer.sinks.metrics import MetricsSink

    class Store:
        evictions = 0
        write_failures = 0
        failing = False

        def size(self) -> int:
            return 0

    class Cache:
        hits = 0
        misses = 0

    registry = CollectorRegistry()
    sink = MetricsSink(registry)
    sink.register_store(Store())
    sink.register_explanation_cache(Cache())
    return exposed_names(generate_latest(registry).decode())


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    for panel in panels(dash):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_queries(dash: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"}


def substitute(expr: str, values: dict[str, str]) -> str:
    """A query as Grafana sends it: dashboard variables (e.g. ".*") and built-ins replaced."""
    for name, value in {**GRAFANA_VARS, **{f"${k}": v for k, v in values.items()}}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr
