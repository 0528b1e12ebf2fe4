"""One exported record: the shape shared by the OTLP logs exporter and the JSON lines file.

Attributes follow OpenTelemetry's semantic conventions where one exists
(``k8s.*`` for the pod the drop happened to, ``client.*``/``server.*``/
``network.*`` for the connection); ours are under the ``drop_explainer.``
prefix. The body is the explanation's headline. docs/deploy.md lists them.

A record is built once, off the per-drop path (only for a new signature or
a periodic count update), and kept as plain values so each exporter encodes
it its own way; ``size`` is what the byte-bounded queues charge for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeAlias

from drop_explainer.cluster import workloads
from drop_explainer.cluster.state import ClusterState
from drop_explainer.flows.model import Endpoint
from drop_explainer.sinks.base import ExplainedDrop

PREFIX: Final = "drop_explainer."
SCOPE: Final = "drop-explainer"
NEW: Final = "drop_explainer.drop.new"
UPDATE: Final = "drop_explainer.drop.update"
SEVERITY_WARN: Final = 13
"""OpenTelemetry SeverityNumber WARN: a drop is a warning, as the Kubernetes Event we make is."""
_KIND_ATTRIBUTE: Final = {"Deployment": "k8s.deployment.name", "StatefulSet": "k8s.statefulset.name",
                          "DaemonSet": "k8s.daemonset.name", "ReplicaSet": "k8s.replicaset.name",
                          "Job": "k8s.job.name", "CronJob": "k8s.cronjob.name"}
_MAX_TEXT: Final = 4096

Value: TypeAlias = str | int | bool | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Record:
    time_ns: int
    event: str
    """NEW or UPDATE: the OTLP LogRecord's event_name."""
    body: str
    attributes: Mapping[str, Value]
    size: int
    """Bytes this record is charged in a queue (its JSON line's length)."""

    def json_line(self, resource: Mapping[str, Value]) -> str:
        """The JSON lines file's shape: the OTLP log record's fields, attributes as a flat object."""
        doc = {"time": _rfc3339(self.time_ns), "timeUnixNano": str(self.time_ns), "severityNumber": SEVERITY_WARN,
               "severityText": "WARN", "eventName": self.event, "body": self.body,
               "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attributes.items()},
               "resource": {k: list(v) if isinstance(v, tuple) else v for k, v in resource.items()}}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _rfc3339(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _size(body: str, attributes: Mapping[str, Value]) -> int:
    return len(body.encode()) + sum(len(k) + len(str(v)) + 8 for k, v in attributes.items()) + 96


def _affected_endpoint(drop: ExplainedDrop) -> tuple[Endpoint, Endpoint]:
    """(the endpoint the drop happened to, the other end)."""
    flow = drop.flow
    if drop.signature.direction == "egress":
        return flow.source, flow.destination
    return flow.destination, flow.source


def _workload(ep: Endpoint, state: ClusterState | None) -> workloads.Workload | None:
    if not (ep.namespace and ep.pod):
        return None
    pod = state.pods.get(f"{ep.namespace}/{ep.pod}") if state is not None else None
    if pod is not None:
        return workloads.of_pod(pod)
    return workloads.of_gone_pod(ep.namespace, ep.pod, ep.labels, ep.workload)


def _ip_type(ip: str) -> str:
    return "ipv6" if ":" in ip else "ipv4"


def attributes_of(drop: ExplainedDrop, state: ClusterState | None) -> dict[str, Value]:
    """The record's attributes for one drop (of its signature): conventions first, then ours."""
    sig, flow, expl = drop.signature, drop.flow, drop.explanation
    affected, peer = _affected_endpoint(drop)
    attrs: dict[str, Value] = {}
    if affected.namespace:
        attrs["k8s.namespace.name"] = affected.namespace
    if affected.pod:
        attrs["k8s.pod.name"] = affected.pod
    owner = _workload(affected, state)
    if owner is not None and owner.kind in _KIND_ATTRIBUTE:
        attrs[_KIND_ATTRIBUTE[owner.kind]] = owner.name
    if flow.node:
        attrs["k8s.node.name"] = flow.node
    if peer.ip:
        attrs["network.peer.address"] = peer.ip
        attrs["network.type"] = _ip_type(peer.ip)
    attrs["network.transport"] = sig.protocol.lower()
    if flow.source.ip:
        attrs["client.address"] = flow.source.ip
    if flow.destination.ip:
        attrs["server.address"] = flow.destination.ip
    if sig.port:
        attrs["server.port"] = sig.port
    attrs[PREFIX + "signature"] = sig.id
    attrs[PREFIX + "direction"] = sig.direction
    attrs[PREFIX + "verdict"] = flow.verdict.value
    attrs[PREFIX + "policy"] = sig.policies
    attrs[PREFIX + "trap"] = sig.traps
    attrs[PREFIX + "source.workload"] = sig.source_workload
    attrs[PREFIX + "destination.workload"] = sig.destination
    if owner is not None:
        attrs[PREFIX + "workload.kind"] = owner.kind
    if expl.fixes:
        attrs[PREFIX + "fix"] = expl.fixes[0].summary[:_MAX_TEXT]
        attrs[PREFIX + "fix.apply"] = expl.fixes[0].apply[:_MAX_TEXT]
    if not expl.complete:
        attrs[PREFIX + "incomplete"] = True
    return attrs


def new_record(drop: ExplainedDrop, state: ClusterState | None, packets: int) -> Record:
    attrs = attributes_of(drop, state)
    attrs[PREFIX + "count"] = packets
    attrs[PREFIX + "count.delta"] = packets
    body = drop.explanation.headline[:_MAX_TEXT]
    return Record(drop.flow.time_ns or 0, NEW, body, attrs, _size(body, attrs))


def update_record(base: Record, time_ns: int, total: int, delta: int) -> Record:
    """A count update of a signature: its first record's attributes, the counts brought up to date."""
    attrs = dict(base.attributes)
    attrs[PREFIX + "count"] = total
    attrs[PREFIX + "count.delta"] = delta
    return Record(time_ns, UPDATE, base.body, attrs, base.size)


StateGetter: TypeAlias = Callable[[], ClusterState]
