"""The export sink the settings ask for, or None: the one call app.py makes."""

from __future__ import annotations

from collections.abc import Callable

from drop_explainer import __version__
from drop_explainer.cluster.state import ClusterState
from drop_explainer.export.channel import Channel, Exporter
from drop_explainer.export.config import ExportSettings
from drop_explainer.export.jsonl import FileExporter
from drop_explainer.export.otlp import OtlpExporter
from drop_explainer.export.record import Value
from drop_explainer.export.sink import ExportPolicy, ExportSink


def resource_of(node_name: str) -> dict[str, Value]:
    """The OTLP resource: who reports (semantic conventions service.* and k8s.node.name)."""
    resource: dict[str, Value] = {"service.name": "drop-explainer", "service.version": __version__}
    if node_name:
        resource["k8s.node.name"] = node_name
        resource["service.instance.id"] = node_name
    return resource


def export_sink(settings: ExportSettings, node_name: str,
                state: Callable[[], ClusterState] | None) -> ExportSink | None:
    if not settings.enabled:
        return None
    resource = resource_of(node_name)
    exporters: list[Exporter] = []
    if settings.otlp is not None:
        exporters.append(OtlpExporter(settings.otlp, resource))
    if settings.file is not None:
        exporters.append(FileExporter(settings.file, resource))
    policy = ExportPolicy(new=settings.new, updates=settings.updates, update_interval_s=settings.update_interval_s,
                          sample=settings.sample, resource=resource)
    return ExportSink([Channel(e, settings.channel) for e in exporters], policy, state)
