"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy compiled into the rule model.

Every fact here is from ``policy-kinds.md`` section 1 (cited per function):
validity (1.1), the implicit namespace of subjects and peers (1.2), label
sources (1.3), peers (1.4), ports (1.5), L7 (1.6), empty lists (1.7) and
``enableDefaultDeny`` (1.8). An object Cilium's validation rejects has no
effect at all, so it is refused whole (``Invalid``, naming the field) and the
caller counts it; it never stops the rest of the state from loading.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Final

from drop_explainer.cluster.objects import Operator
from drop_explainer.policy.model import (
    ANY,
    Action,
    Cidr,
    CompiledPolicy,
    Direction,
    ModelRule,
    Origin,
    Peer,
    PeerKind,
    PortRange,
    Req,
    Selector,
)

GROUP: Final = "cilium.io"
VERSIONS: Final = ("v2", "v2alpha1")
CNP: Final = "CiliumNetworkPolicy"
CCNP: Final = "CiliumClusterwideNetworkPolicy"
KINDS: Final = (CNP, CCNP)

NS_KEY: Final = "io.kubernetes.pod.namespace"
NS_LABELS: Final = "io.cilium.k8s.namespace.labels."
ENTITIES: Final = frozenset({"all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress",
                             "unmanaged", "remote-node", "health", "none", "kube-apiserver"})
PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
_L3_INGRESS: Final = ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "fromNodes", "fromGroups")
_L3_EGRESS: Final = ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toServices", "toGroups", "toNodes",
                     "toFQDNs")
_MAX_PORTS: Final = 40

Json = Mapping[str, Any]


class Invalid(ValueError):
    """Cilium would reject the object (status Valid=False); ``field`` is where."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field}: {reason}")
        self.field = field
        self.reason = reason


def is_cilium_policy(data: Json) -> bool:
    api = str(data.get("apiVersion") or "")
    return data.get("kind") in KINDS and (api.partition("/")[0] == GROUP or not api)


def compile_object(data: Json) -> CompiledPolicy:
    """The object's rules in the model; raises Invalid as Cilium's validation would (section 1.1)."""
    kind = str(data.get("kind"))
    api = str(data.get("apiVersion") or f"{GROUP}/v2")
    if api.partition("/")[2] not in VERSIONS:
        raise Invalid("apiVersion", f"{api} is not a served version of {kind} (served: cilium.io/v2, v2alpha1)")
    meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = str(meta.get("name") or "")
    if not name:
        raise Invalid("metadata.name", "is required")
    namespace = str(meta.get("namespace") or "default") if kind == CNP else None
    specs: list[tuple[str, object]] = []
    if data.get("spec") is not None:
        specs.append(("spec", data["spec"]))
    extra = data.get("specs")
    if extra is not None:
        if not isinstance(extra, list):
            raise Invalid("specs", "expected a list of rules")
        specs.extend((f"specs[{i}]", r) for i, r in enumerate(extra))
    if not specs:
        raise Invalid("spec", "a CiliumNetworkPolicy needs spec or specs (empty policy)")
    origin = (kind, namespace, name)
    rules: list[ModelRule] = []
    for path, spec in specs:
        rules.extend(_rule(origin, path, spec))
    rv = meta.get("resourceVersion")
    return CompiledPolicy(kind, namespace, name, tuple(rules), str(rv) if rv is not None else None)


def _obj(value: object, path: str) -> Json:
    if not isinstance(value, Mapping):
        raise Invalid(path, "expected an object")
    return value


def _list(value: object, path: str) -> list[Any] | None:
    """None when absent; a list (maybe empty: explicit empty lists mean something, section 1.7)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise Invalid(path, "expected a list")
    return value


def _rule(origin: tuple[str, str | None, str], path: str, data: object) -> list[ModelRule]:
    """One rule of spec/specs (section 1.1 validity, 1.2 subject, 1.8 default deny)."""
    rule = _obj(data, path)
    kind, namespace, _ = origin
    has_ep, has_node = rule.get("endpointSelector") is not None, rule.get("nodeSelector") is not None
    if has_ep == has_node:
        raise Invalid(path, "exactly one of endpointSelector and nodeSelector is required")
    if has_node and kind == CNP:
        raise Invalid(f"{path}.nodeSelector", "nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy")
    sections = {key: _list(rule.get(key), f"{path}.{key}") for key in ("ingress", "ingressDeny", "egress",
                                                                        "egressDeny")}
    if not any(sections.values()):
        raise Invalid(path, "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny")
    sel_key = "nodeSelector" if has_node else "endpointSelector"
    subject = selector(rule[sel_key], f"{path}.{sel_key}", source_default=ANY)
    if not has_node and namespace is not None:
        # A CNP's subject is always within its namespace; a foreign namespace is dropped (section 1.2).
        subject = Selector((*(r for r in subject.reqs if r.key != NS_KEY),
                            Req("k8s", NS_KEY, Operator.IN, (namespace,))))
    dd = _obj(rule.get("enableDefaultDeny") or {}, f"{path}.enableDefaultDeny")
    out: list[ModelRule] = []
    for key, entries in sections.items():
        if not entries:
            continue
        direction = Direction.INGRESS if key.startswith("ingress") else Direction.EGRESS
        flag = dd.get(direction.value.lower())
        default_deny = True if flag is None else bool(flag)
        action = Action.DENY if key.endswith("Deny") else Action.ALLOW
        for i, entry in enumerate(entries):
            where = f"{path}.{key}[{i}]"
            out.extend(_entry(origin, where, _obj(entry, where), direction=direction, action=action,
                              subject=subject, namespace=namespace, default_deny=default_deny, host=has_node))
    return out


def selector(data: object, path: str, *, source_default: str) -> Selector:
    """A Cilium label selector: keys ``source:key`` or bare (source ``any``, section 1.3)."""
    sel = _obj(data, path)
    reqs: list[Req] = []
    labels = sel.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise Invalid(f"{path}.matchLabels", "expected a map of labels")
    for k, v in labels.items():
        src, key = _key(str(k), source_default)
        reqs.append(Req(src, key, Operator.IN, ("" if v is None else str(v),)))
    exprs = _list(sel.get("matchExpressions"), f"{path}.matchExpressions") or []
    for i, raw in enumerate(exprs):
        e = _obj(raw, f"{path}.matchExpressions[{i}]")
        try:
            op = Operator(str(e.get("operator")))
        except ValueError:
            raise Invalid(f"{path}.matchExpressions[{i}].operator",
                          f"{e.get('operator')!r} is not In, NotIn, Exists or DoesNotExist") from None
        values = tuple(str(v) for v in (e.get("values") or ()))
        if op in (Operator.IN, Operator.NOT_IN) and not values:
            raise Invalid(f"{path}.matchExpressions[{i}].values", f"{op} needs at least one value")
        src, key = _key(str(e.get("key") or ""), source_default)
        reqs.append(Req(src, key, op, values))
    return Selector(tuple(reqs))


def _key(text: str, default: str) -> tuple[str, str]:
    src, sep, key = text.partition(":")
    return (src, key) if sep else (default, text)


def _peer_selector(sel: Selector, namespace: str | None) -> Selector:
    """The implicit namespace of a peer selector (section 1.2, ``getEndpointSelector``)."""
    if any(r.source == "reserved" for r in sel.reqs):
        return sel
    if any(r.key == NS_KEY for r in sel.reqs):
        return sel
    if namespace is not None:
        if any(r.key.startswith(NS_LABELS) for r in sel.reqs):
            return sel  # namespace-label keys select across namespaces (1.19.4 code; docs say "ignored")
        return Selector((*sel.reqs, Req("k8s", NS_KEY, Operator.IN, (namespace,))))
    return Selector((*sel.reqs, Req("k8s", NS_KEY, Operator.EXISTS)))


def _entry(origin: tuple[str, str | None, str], where: str, entry: Json, *, direction: Direction, action: Action,
           subject: Selector, namespace: str | None, default_deny: bool, host: bool) -> list[ModelRule]:
    """One ingress/egress entry: its L3 peer and its L4 ports (sections 1.4, 1.5, 1.7)."""
    ingress = direction is Direction.INGRESS
    fields = _L3_INGRESS if ingress else _L3_EGRESS
    for req_key in ("fromRequires", "toRequires"):
        if entry.get(req_key):
            raise Invalid(f"{where}.{req_key}", "is deprecated and may hold no items (CRD maxItems 0)")
    present = [f for f in fields if entry.get(f) is not None]
    nonempty = [f for f in present if entry.get(f)]
    if len(nonempty) > 1:
        raise Invalid(where, f"combining {nonempty[0]} and {nonempty[1]} is not supported yet")
    notes: list[str] = []
    peer = _peer(entry, where, present, nonempty, namespace=namespace, action=action, notes=notes)
    ports, l7 = _ports(entry, where, action=action, ingress=ingress, host=host, notes=notes)
    if peer.kind is PeerKind.ANY and ports is None:
        # `{}`: no L3, no L4: adds no filter, the subject only enters default deny (section 1.7)
        return [marker(origin, where, direction, subject, default_deny=default_deny, host=host)]
    origin_ = Origin(origin[0], origin[1], origin[2], where)
    rule = ModelRule(origin_, direction, action, subject, peer, ports, default_deny=default_deny, l7=l7, host=host,
                     notes=tuple(notes))
    return [rule]


def marker(origin: tuple[str, str | None, str], path: str, direction: Direction, subject: Selector, *,
           default_deny: bool, host: bool) -> ModelRule:
    """A rule that matches no connection but selects its subject (``ingress: [{}]``, section 1.7)."""
    return ModelRule(Origin(origin[0], origin[1], origin[2], path), direction, Action.ALLOW, subject,
                     Peer(PeerKind.NONE, text="{}"), None, default_deny=default_deny, host=host)


def _peer(entry: Json, where: str, present: list[str], nonempty: list[str], *, namespace: str | None,
          action: Action, notes: list[str]) -> Peer:
    if not present:
        return Peer(PeerKind.ANY, text="(no L3 field: any peer)")
    if not nonempty:
        return Peer(PeerKind.NONE, text=f"{present[0]}: [] (selects nothing)")
    key = nonempty[0]
    value = _list(entry[key], f"{where}.{key}") or []
    at = f"{where}.{key}"
    match key:
        case "fromEndpoints" | "toEndpoints":
            sels = tuple(_peer_selector(selector(s, f"{at}[{i}]", source_default=ANY), namespace)
                         for i, s in enumerate(value))
            return Peer(PeerKind.ENDPOINTS, selectors=sels, text=f"{key}: " + ", ".join(s.describe() for s in sels))
        case "fromEntities" | "toEntities":
            names = tuple(str(v) for v in value)
            bad = [n for n in names if n not in ENTITIES]
            if bad:
                raise Invalid(at, f"unknown entity {bad[0]!r} (one of {', '.join(sorted(ENTITIES))})")
            return Peer(PeerKind.ENTITIES, entities=names, text=f"{key}: [{', '.join(names)}]")
        case "fromCIDR" | "toCIDR":
            cidrs = tuple(Cidr(_cidr(str(v), f"{at}[{i}]")) for i, v in enumerate(value))
            return Peer(PeerKind.CIDR, cidrs=cidrs, text=f"{key}: [{', '.join(c.cidr for c in cidrs)}]")
        case "fromCIDRSet" | "toCIDRSet":
            return _cidr_set(key, at, value, notes)
        case "toServices":
            return _services(at, value, namespace, notes)
        case "toFQDNs":
            if action is Action.DENY:
                raise Invalid(at, "deny rules cannot use toFQDNs")
            fqdns = [str(_obj(v, f"{at}[{i}]").get("matchName") or _obj(v, f"{at}[{i}]").get("matchPattern"))
                     for i, v in enumerate(value)]
            notes.append(f"toFQDNs [{', '.join(fqdns)}]: depends on DNS answers seen by Cilium's DNS proxy "
                         "(not decidable from the cluster state)")
            return Peer(PeerKind.FQDN, text=f"toFQDNs: [{', '.join(fqdns)}]")
    notes.append(f"{key} is not evaluated here")
    return Peer(PeerKind.UNSUPPORTED, text=f"{key} (not evaluated)")


def _cidr(text: str, at: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        try:
            return str(ipaddress.ip_network(str(ipaddress.ip_address(text))))
        except ValueError:
            raise Invalid(at, f"{text!r} is not a CIDR") from None


def _cidr_set(key: str, at: str, value: list[Any], notes: list[str]) -> Peer:
    cidrs: list[Cidr] = []
    for i, raw in enumerate(value):
        item = _obj(raw, f"{at}[{i}]")
        forms = [k for k in ("cidr", "cidrGroupRef", "cidrGroupSelector") if item.get(k)]
        if len(forms) != 1:
            raise Invalid(f"{at}[{i}]", "exactly one of cidr, cidrGroupRef and cidrGroupSelector is required")
        if forms[0] != "cidr":
            notes.append(f"{key}[{i}].{forms[0]} (CiliumCIDRGroup) is not evaluated here")
            continue
        net = _cidr(str(item["cidr"]), f"{at}[{i}].cidr")
        excepts = []
        for j, e in enumerate(_list(item.get("except"), f"{at}[{i}].except") or []):
            ex = _cidr(str(e), f"{at}[{i}].except[{j}]")
            if not ipaddress.ip_network(ex).subnet_of(ipaddress.ip_network(net)):  # type: ignore[arg-type]
                raise Invalid(f"{at}[{i}].except[{j}]", f"{ex} is not contained in {net}")
            excepts.append(ex)
        cidrs.append(Cidr(net, tuple(excepts)))
    text = ", ".join(c.cidr + (f" except {', '.join(c.excepts)}" if c.excepts else "") for c in cidrs)
    return Peer(PeerKind.CIDR, cidrs=tuple(cidrs), text=f"{key}: [{text}]")


def _services(at: str, value: list[Any], namespace: str | None, notes: list[str]) -> Peer:
    if len(value) == 1:
        item = _obj(value[0], f"{at}[0]")
        svc = item.get("k8sService")
        if isinstance(svc, Mapping) and svc.get("serviceName"):
            ns = str(svc.get("namespace") or namespace or "default")
            return Peer(PeerKind.SERVICE, service=(ns, str(svc["serviceName"])),
                        text=f"toServices: [{ns}/{svc['serviceName']}]")
    notes.append("toServices with a k8sServiceSelector or several Services is not evaluated here")
    return Peer(PeerKind.UNSUPPORTED, text="toServices (not evaluated)")


def _ports(entry: Json, where: str, *, action: Action, ingress: bool, host: bool,
           notes: list[str]) -> tuple[tuple[PortRange, ...] | None, str | None]:
    """toPorts (section 1.5) or icmps; the L7 part is named, not evaluated (section 1.6)."""
    to_ports = _list(entry.get("toPorts"), f"{where}.toPorts")
    icmps = _list(entry.get("icmps"), f"{where}.icmps")
    if to_ports and icmps:
        raise Invalid(where, "icmps and toPorts cannot be combined in one rule")
    if icmps:
        return (PortRange(("ICMP",), 0, 0),), None  # ICMP only: never a TCP/UDP/SCTP connection
    if to_ports is None:
        return None, None
    out: list[PortRange] = []
    l7: list[str] = []
    count = 0
    for i, raw in enumerate(to_ports):
        at = f"{where}.toPorts[{i}]"
        pr = _obj(raw, at)
        rules = pr.get("rules")
        if rules:
            if action is Action.DENY:
                raise Invalid(f"{at}.rules", "deny rules may only list ports")
            kinds = [k for k in ("http", "kafka", "dns", "l7proto") if _obj(rules, f"{at}.rules").get(k)]
            if "dns" in kinds and ingress:
                raise Invalid(f"{at}.rules.dns", "DNS rules are only allowed on egress")
            if host:
                raise Invalid(f"{at}.rules", "L7 rules are not allowed in host policies")
            l7.append(f"{where}.toPorts[{i}].rules ({', '.join(kinds) or 'L7'})")
        elif pr.get("serverNames") or pr.get("listener"):
            l7.append(f"{where}.toPorts[{i}].{'serverNames' if pr.get('serverNames') else 'listener'}")
        ports = _list(pr.get("ports"), f"{at}.ports")
        if not ports:
            notes.append(f"{at} lists no ports: taken as every port (inference)")
            out.append(PortRange(PROTOCOLS))
            continue
        for j, p in enumerate(ports):
            count += 1
            out.append(_port(_obj(p, f"{at}.ports[{j}]"), f"{at}.ports[{j}]"))
    if count > _MAX_PORTS:
        raise Invalid(f"{where}.toPorts", f"{count} ports in one rule (at most {_MAX_PORTS})")
    return tuple(out), "; ".join(l7) or None


def _port(p: Json, at: str) -> PortRange:
    proto = str(p.get("protocol") or "ANY").upper()
    if proto not in (*PROTOCOLS, "ANY", "VRRP", "IGMP"):  # section 1.5 (ICMP goes in icmps)
        raise Invalid(f"{at}.protocol", f"{p.get('protocol')!r} is not TCP, UDP, SCTP, VRRP, IGMP or ANY")
    protos = PROTOCOLS if proto == "ANY" else (proto,)  # ANY is TCP, UDP and SCTP only (section 1.5)
    raw = p.get("port")
    text = "0" if raw is None else str(raw)
    if text.isdigit():
        low = int(text)
        if low > 65535:
            raise Invalid(f"{at}.port", f"{low} is not a port number")
        end = p.get("endPort")
        high = low
        if end is not None:
            if not isinstance(end, int) or isinstance(end, bool) or not low <= end <= 65535:
                raise Invalid(f"{at}.endPort", f"{end!r} must be a port number not below port {low}")
            high = end
        return PortRange(protos, low, high if low else 0)
    name = text.lower()
    if not name.replace("-", "").isalnum() or len(name) > 15:
        raise Invalid(f"{at}.port", f"{text!r} is neither a port number nor a port name")
    return PortRange(protos, name=name)  # endPort is ignored for named ports (section 1.5)
