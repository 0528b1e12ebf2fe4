"""Kubernetes JSON (as the API server or kubectl writes it) to our slim objects.

Every accessor carries the field path, so a malformed object is reported as
"NetworkPolicy backend/deny: field spec.ingress[0].ports[1].port: ..."
instead of a KeyError deep in the engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from drop_explainer.cluster import objects as o
from drop_explainer.cluster import slices
from drop_explainer.cluster.errors import ObjectError

T = TypeVar("T")

KINDS = ("Namespace", "Pod", "Node", "Service", "NetworkPolicy")
PROTOCOLS = ("TCP", "UDP", "SCTP")
_PROBES = (("livenessProbe", "liveness"), ("readinessProbe", "readiness"), ("startupProbe", "startup"))


class _Fields:
    """A view of one JSON object that knows its path for error messages."""

    __slots__ = ("data", "obj", "path")

    def __init__(self, obj: str, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ObjectError(obj, path or "(object)", f"expected an object, got {_kind(data)}")
        self.obj = obj
        self.data: Mapping[str, Any] = data
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def sub(self, key: str) -> _Fields:
        value = self.data.get(key)
        return _Fields(self.obj, {} if value is None else value, self._at(key))

    def opt_sub(self, key: str) -> _Fields | None:
        value = self.data.get(key)
        return None if value is None else _Fields(self.obj, value, self._at(key))

    def items(self, key: str) -> list[_Fields]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ObjectError(self.obj, self._at(key), f"expected a list, got {_kind(value)}")
        return [_Fields(self.obj, v, f"{self._at(key)}[{i}]") for i, v in enumerate(value)]

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise ObjectError(self.obj, self._at(key), "is required")
            return None
        if not isinstance(value, str):
            raise ObjectError(self.obj, self._at(key), f"expected a string, got {_kind(value)}")
        return value

    def strs(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ObjectError(self.obj, self._at(key), "expected a list of strings")
        return tuple(value)

    def labels(self, key: str) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ObjectError(self.obj, self._at(key), f"expected a map, got {_kind(value)}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise ObjectError(self.obj, f"{self._at(key)}.{k}", f"expected a string, got {_kind(v)}")
            out[str(k)] = v
        return out

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise ObjectError(self.obj, self._at(key), f"expected true or false, got {_kind(value)}")
        return value

    def port(self, key: str, *, names: bool = True) -> int | str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise ObjectError(self.obj, self._at(key), "expected a port, got a boolean")
        if isinstance(value, int):
            if not 1 <= value <= 65535:
                raise ObjectError(self.obj, self._at(key), f"port {value} is outside 1-65535")
            return value
        if isinstance(value, str) and names:
            if value.isdigit():
                return self.port_from_digits(key, value)
            if not value:
                raise ObjectError(self.obj, self._at(key), "empty port name")
            return value
        what = "a port number or name" if names else "a port number"
        raise ObjectError(self.obj, self._at(key), f"expected {what}, got {value!r}")

    def port_from_digits(self, key: str, value: str) -> int:
        number = int(value)
        if not 1 <= number <= 65535:
            raise ObjectError(self.obj, self._at(key), f"port {number} is outside 1-65535")
        return number

    def protocol(self, key: str = "protocol") -> str:
        value = self.text(key) or "TCP"
        if value not in PROTOCOLS:
            raise ObjectError(self.obj, self._at(key), f"unknown protocol {value!r} (TCP, UDP or SCTP)")
        return value

    def enum(self, key: str, parse: Callable[[str], T]) -> T:
        raw = self.text(key, required=True)
        assert raw is not None
        try:
            return parse(raw)
        except ValueError:
            raise ObjectError(self.obj, self._at(key), f"unknown value {raw!r}") from None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def object_name(data: Mapping[str, Any]) -> str:
    """How an object is named in errors: kind namespace/name."""
    kind = data.get("kind", "?")
    meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name", "?")
    ns = meta.get("namespace")
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def _meta(f: _Fields) -> tuple[_Fields, str]:
    meta = f.sub("metadata")
    name = meta.text("name", required=True)
    assert name is not None
    return meta, name


def _namespaced(f: _Fields) -> tuple[_Fields, str, str]:
    meta, name = _meta(f)
    return meta, meta.text("namespace") or "default", name


def parse_selector(f: _Fields) -> o.LabelSelector:
    labels = tuple(sorted(f.labels("matchLabels").items()))
    reqs = []
    for e in f.items("matchExpressions"):
        op = e.enum("operator", o.Operator)
        values = e.strs("values")
        if op in (o.Operator.IN, o.Operator.NOT_IN) and not values:
            raise ObjectError(e.obj, f"{e.path}.values", f"must be non-empty for {op}")
        if op in (o.Operator.EXISTS, o.Operator.DOES_NOT_EXIST) and values:
            raise ObjectError(e.obj, f"{e.path}.values", f"must be empty for {op}")
        key = e.text("key", required=True)
        assert key is not None
        reqs.append(o.Requirement(key, op, tuple(values)))
    return o.LabelSelector(labels, tuple(reqs))


def parse_namespace(data: Mapping[str, Any], obj: str) -> o.Namespace:
    meta, name = _meta(_Fields(obj, data, ""))
    # The API server always sets this label to the name (and keeps it so), so
    # namespaceSelectors on it must match even when a saved file omits it.
    labels = {**meta.labels("labels"), "kubernetes.io/metadata.name": name}
    return o.Namespace(name, labels, meta.text("resourceVersion"))


def _container(c: _Fields) -> o.Container:
    name = c.text("name", required=True)
    assert name is not None
    ports = tuple(
        o.ContainerPort(_required_port(p, "containerPort"), p.protocol(), p.text("name"))
        for p in c.items("ports")
    )
    probes = []
    for key, kind in _PROBES:
        probe = c.opt_sub(key)
        if probe is None:
            continue
        for handler in ("httpGet", "tcpSocket", "grpc", "exec"):
            h = probe.opt_sub(handler)
            if h is not None:
                port = None if handler == "exec" else h.port("port", names=handler != "grpc")
                probes.append(o.Probe(name, kind, handler, port))
                break
    return o.Container(name, ports, tuple(probes))


def _required_port(f: _Fields, key: str) -> int:
    value = f.port(key, names=False)
    if value is None:
        raise ObjectError(f.obj, f"{f.path}.{key}", "is required")
    assert isinstance(value, int)
    return value


def _check_ip(f: _Fields, key: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ObjectError(f.obj, f"{f.path}.{key}" if f.path else key, f"not an IP address: {value!r}") from None


def parse_pod(data: Mapping[str, Any], obj: str) -> o.Pod:
    f = _Fields(obj, data, "")
    meta, ns, name = _namespaced(f)
    spec, status = f.sub("spec"), f.sub("status")
    ips = [_check_ip(p, "ip", p.text("ip", required=True) or "") for p in status.items("podIPs")]
    single = status.text("podIP")
    if single and not ips:
        ips = [_check_ip(status, "podIP", single)]
    host_ip = status.text("hostIP")
    owners = tuple(
        o.OwnerReference(r.text("kind", required=True) or "", r.text("name", required=True) or "", r.flag("controller"))
        for r in meta.items("ownerReferences")
    )
    containers = tuple(_container(c) for c in spec.items("containers"))
    return o.Pod(
        namespace=ns,
        name=name,
        labels=meta.labels("labels"),
        ips=tuple(ips),
        host_ip=_check_ip(status, "hostIP", host_ip) if host_ip else None,
        node_name=spec.text("nodeName"),
        host_network=spec.flag("hostNetwork"),
        phase=status.text("phase"),
        containers=containers,
        owners=owners,
        generate_name=meta.text("generateName"),
        resource_version=meta.text("resourceVersion"),
        service_account=spec.text("serviceAccountName") or spec.text("serviceAccount"),
    )


def parse_node(data: Mapping[str, Any], obj: str) -> o.Node:
    f = _Fields(obj, data, "")
    meta, name = _meta(f)
    status, spec = f.sub("status"), f.sub("spec")
    addresses = []
    for a in status.items("addresses"):
        kind = a.text("type", required=True) or ""
        address = a.text("address", required=True) or ""
        if kind in ("InternalIP", "ExternalIP"):
            address = _check_ip(a, "address", address)
        addresses.append((kind, address))
    cidrs = list(spec.strs("podCIDRs"))
    single = spec.text("podCIDR")
    if single and not cidrs:
        cidrs = [single]
    for i, cidr in enumerate(cidrs):
        _check_cidr(spec, f"podCIDRs[{i}]", cidr)
    return o.Node(name, tuple(addresses), tuple(cidrs), meta.labels("labels"))


def _check_cidr(f: _Fields, key: str, cidr: str) -> str:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        raise ObjectError(f.obj, f"{f.path}.{key}" if f.path else key, f"not a CIDR: {cidr!r}") from None


def parse_service(data: Mapping[str, Any], obj: str) -> o.Service:
    f = _Fields(obj, data, "")
    _, ns, name = _namespaced(f)
    spec = f.sub("spec")
    ports = []
    for p in spec.items("ports"):
        port = _required_port(p, "port")
        target = p.port("targetPort")
        ports.append(o.ServicePort(port, port if target is None else target, p.protocol(), p.text("name")))
    ips = [ip for ip in spec.strs("clusterIPs") if ip != "None"]
    single = spec.text("clusterIP")
    if single and single != "None" and not ips:
        ips = [single]
    selector = spec.labels("selector") if spec.has("selector") else None
    return o.Service(ns, name, selector or None, tuple(ports), tuple(ips))


def _peer(p: _Fields) -> o.Peer:
    pod_sel = p.opt_sub("podSelector")
    ns_sel = p.opt_sub("namespaceSelector")
    block = p.opt_sub("ipBlock")
    ip_block = None
    if block is not None:
        cidr = block.text("cidr", required=True) or ""
        excepts = block.strs("except")
        _check_cidr(block, "cidr", cidr)
        for i, e in enumerate(excepts):
            _check_cidr(block, f"except[{i}]", e)
        ip_block = o.IPBlock(cidr, excepts)
        if pod_sel is not None or ns_sel is not None:
            raise ObjectError(p.obj, p.path, "ipBlock cannot be combined with podSelector or namespaceSelector")
    elif pod_sel is None and ns_sel is None:
        raise ObjectError(p.obj, p.path, "a peer needs podSelector, namespaceSelector or ipBlock")
    return o.Peer(
        parse_selector(pod_sel) if pod_sel is not None else None,
        parse_selector(ns_sel) if ns_sel is not None else None,
        ip_block,
    )


def _policy_port(p: _Fields) -> o.PolicyPort:
    port = p.port("port")
    end = p.port("endPort", names=False)
    assert end is None or isinstance(end, int)
    if end is not None:
        if not isinstance(port, int):
            raise ObjectError(p.obj, f"{p.path}.endPort", "needs a numeric port")
        if end < port:
            raise ObjectError(p.obj, f"{p.path}.endPort", f"{end} is below port {port}")
    return o.PolicyPort(p.protocol(), port, end)


def _rules(spec: _Fields, key: str, peers_key: str) -> tuple[o.Rule, ...]:
    return tuple(
        o.Rule(tuple(_peer(p) for p in r.items(peers_key)), tuple(_policy_port(p) for p in r.items("ports")))
        for r in spec.items(key)
    )


def parse_network_policy(data: Mapping[str, Any], obj: str) -> o.NetworkPolicy:
    f = _Fields(obj, data, "")
    meta, ns, name = _namespaced(f)
    spec = f.sub("spec")
    if not spec.has("podSelector"):
        raise ObjectError(obj, "spec.podSelector", "is required (use {} to select every pod)")
    ingress = _rules(spec, "ingress", "from")
    egress = _rules(spec, "egress", "to")
    raw_types = spec.strs("policyTypes")
    types = set()
    for i, t in enumerate(raw_types):
        try:
            types.add(o.PolicyType(t))
        except ValueError:
            raise ObjectError(obj, f"spec.policyTypes[{i}]", f"unknown policy type {t!r}") from None
    if not raw_types:
        # The API server's defaulting: Ingress always, Egress only when the
        # policy has at least one egress rule (an empty list does not count).
        types = {o.PolicyType.INGRESS}
        if egress:
            types.add(o.PolicyType.EGRESS)
    return o.NetworkPolicy(
        namespace=ns,
        name=name,
        pod_selector=parse_selector(spec.sub("podSelector")),
        policy_types=frozenset(types),
        ingress=ingress,
        egress=egress,
        policy_types_explicit=bool(raw_types),
        resource_version=meta.text("resourceVersion"),
        creation_timestamp=meta.text("creationTimestamp"),
        labels=meta.labels("labels"),
        annotations={k: v for k, v in meta.labels("annotations").items() if k != _LAST_APPLIED},
        managers=tuple(m.text("manager") or "" for m in meta.items("managedFields")),
    )


_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


GROUP_OF: Final[Mapping[str, str]] = {"Namespace": "", "Pod": "", "Node": "", "Service": "",
                                      "NetworkPolicy": "networking.k8s.io", "EndpointSlice": "discovery.k8s.io"}
"""The API group each kind we parse belongs to; the same kind name in another group is another kind."""


def parser_for(data: Mapping[str, Any]) -> Callable[[Mapping[str, Any], str], object] | None:
    """The parser of an object by apiVersion and kind; None for any other (group, kind).

    An object without apiVersion (hand-written states, items of a typed list) is read by its kind.
    """
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in GROUP_OF:
        return None
    api = data.get("apiVersion")
    if api is not None:
        group = str(api).partition("/")[0] if "/" in str(api) else ""
        if group != GROUP_OF[kind]:
            return None
    return PARSERS[kind]


PARSERS: dict[str, Callable[[Mapping[str, Any], str], object]] = {
    "Namespace": parse_namespace,
    "Pod": parse_pod,
    "Node": parse_node,
    "Service": parse_service,
    "NetworkPolicy": parse_network_policy,
    "EndpointSlice": slices.parse_endpoint_slice,
}
