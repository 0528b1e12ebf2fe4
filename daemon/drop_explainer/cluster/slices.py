"""EndpointSlices from their JSON: the ready backends of a Service as the cluster sees them.

A Service's selector says which pods *should* back it; its EndpointSlices
say which ones *do* (ready, with the named targetPort resolved by the
control plane). Where a state has them, answers about a Service use them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from drop_explainer.cluster import objects as o
from drop_explainer.cluster.errors import ObjectError

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _map(obj: str, value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ObjectError(obj, where, f"expected an object, got {type(value).__name__}")
    return value


def _list(obj: str, value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectError(obj, where, f"expected a list, got {type(value).__name__}")
    return value


def _endpoint(obj: str, data: object, where: str, ns: str) -> o.SliceEndpoint:
    ep = _map(obj, data, where)
    addresses = []
    for i, a in enumerate(_list(obj, ep.get("addresses"), f"{where}.addresses")):
        try:
            addresses.append(str(ipaddress.ip_address(str(a))))
        except ValueError:
            raise ObjectError(obj, f"{where}.addresses[{i}]", f"not an IP address: {a!r}") from None
    ready = _map(obj, ep.get("conditions"), f"{where}.conditions").get("ready")
    if ready is not None and not isinstance(ready, bool):
        raise ObjectError(obj, f"{where}.conditions.ready", "expected true or false")
    ref = _map(obj, ep.get("targetRef"), f"{where}.targetRef")
    pod = None
    if ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
        pod = f"{ref.get('namespace') or ns}/{ref['name']}"
    node = ep.get("nodeName")
    return o.SliceEndpoint(tuple(addresses), ready is not False, pod, node if isinstance(node, str) else None)


def _port(obj: str, data: object, where: str) -> tuple[str | None, int | None, str]:
    p = _map(obj, data, where)
    name, port, proto = p.get("name"), p.get("port"), p.get("protocol") or "TCP"
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ObjectError(obj, f"{where}.port", f"expected a port number, got {port!r}")
    if proto not in _PROTOCOLS:
        raise ObjectError(obj, f"{where}.protocol", f"unknown protocol {proto!r} (TCP, UDP or SCTP)")
    return (name or None) if isinstance(name, str) else None, port, str(proto)


def parse_endpoint_slice(data: Mapping[str, Any], obj: str) -> o.EndpointSlice:
    meta = _map(obj, data.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(obj, "metadata.name", "is required")
    ns = str(meta.get("namespace") or "default")
    labels = _map(obj, meta.get("labels"), "metadata.labels")
    service = labels.get(SERVICE_NAME_LABEL)
    endpoints = tuple(_endpoint(obj, e, f"endpoints[{i}]", ns)
                      for i, e in enumerate(_list(obj, data.get("endpoints"), "endpoints")))
    ports = tuple(_port(obj, p, f"ports[{i}]") for i, p in enumerate(_list(obj, data.get("ports"), "ports")))
    return o.EndpointSlice(ns, name, service if isinstance(service, str) else None, endpoints, ports)
