"""Calico flows -> our Flow: Goldmane / Felix protobuf, and Enterprise flow-log JSON.

Goldmane (``/goldmane.Flows/Stream``) and Felix's node-local reporter
(``FlowCollector/Connect``) send the same ``goldmane.Flow`` message, so one
function reads both: ``flow_from_proto``. Calico Enterprise writes JSON lines
(``/var/log/calico/flowlogs/flows.log``) whose policies are strings such as
``0|default|payments/knp.default.ledger|deny|-1``; ``flow_from_flow_log`` and
``records_from_flow_log`` read those, and ``hit_from_string`` decodes the
strings of every version (``<ns>/knp.default.<name>`` up to 3.31,
``knp:<ns>/<name>`` from 3.32, ``staged:`` markers, ANP/BANP, profiles).

A Goldmane flow is an aggregate, not a packet. Mapping decisions (the
explainer and the sinks rely on them):

- verdict: action Deny -> DROPPED, Allow -> FORWARDED, anything else ->
  UNKNOWN (Felix only ever sends Allow or Deny).
- direction: reporter Src -> EGRESS (measured at the source's node, so
  egress policy decided), Dst -> INGRESS.
- time_ns: the bucket's **end** (``end_time``), else its start: every
  packet it counts was seen before that instant, and the lag metric then
  measures Goldmane's real delay. Felix's own flows carry start == end.
- packets = packets_in + packets_out; connections =
  num_connections_started (0 when the bucket only saw retransmits of
  connections started earlier). Metrics and the drop store sum both.
- endpoints: a workload name ending in ``*`` is an aggregate of the pods
  of one generateName (``nginx-86c57db685-*`` -> ``pod_prefix
  "nginx-86c57db685-"``, no pod); any other workload name is the pod's own
  name. Namespace ``-`` (host endpoints, networks, global network sets)
  means none. Labels are ``key=value`` strings; ``projectcalico.org/``
  keys are Calico bookkeeping (Goldmane already strips them from
  aggregates) and are dropped. Host endpoints become HOST, network sets
  and ``pub``/``pvt`` networks WORLD; Goldmane has no addresses, so those
  ends cannot be matched against ipBlocks (the explainer says so).
- attribution: the enforced trace in evaluation order (policy_index),
  then the staged policies of the pending trace (``staged=True``).
  Other pending hits repeat or contradict the enforced ones (the enforced
  trace is fixed when the connection starts) and are left out.
  An EndOfTier hit becomes ``action="end-of-tier-deny"`` (or ``-pass``)
  named after its trigger policy, with ``trigger="<ns>/<name>"``; an
  explicit rule keeps its rule index; kind is Calico's PolicyKind name,
  except that the Kubernetes one is ``NetworkPolicy`` as for Hubble.
  ``knp.default.`` and ``staged:`` prefixes are stripped wherever a
  version still sends them.
- drop_kind, from the deciding hit (the last enforced deny): an
  end-of-tier deny -> POLICY_DENIED (an isolated endpoint nothing
  admitted; drop_reason ``end-of-tier-deny``), an explicit Deny rule ->
  POLICY_DENY (``deny-rule``); a Deny without any trace -> POLICY_DENIED
  (``deny``).

Records that cannot become a Flow raise ``MalformedFlow`` whose ``reason``
is a short constant the caller uses as a counter label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from drop_explainer.flows import model
from drop_explainer.goldmane_pb import goldmane_pb2 as gm

NO_KEY: Final = "no-key"
NO_TIME: Final = "no-time"
BAD_FIELD: Final = "bad-field"
NOT_JSON: Final = "not-json"

_NS: Final = 1_000_000_000
_CACHE_LIMIT: Final = 4096
_CALICO_LABEL: Final = "projectcalico.org/"


class MalformedFlow(ValueError):
    """A record that cannot become a Flow; ``reason`` is a counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_VERDICTS: Final[Mapping[int, model.Verdict]] = {gm.Allow: model.Verdict.FORWARDED, gm.Deny: model.Verdict.DROPPED}
_DIRECTIONS: Final[Mapping[int, model.Direction]] = {gm.Src: model.Direction.EGRESS, gm.Dst: model.Direction.INGRESS}
_ACTIONS: Final[Mapping[int, str]] = {gm.Allow: "allow", gm.Deny: "deny", gm.Pass: "pass"}
_ENDPOINT_KINDS: Final[Mapping[int, model.EndpointKind]] = {
    gm.WorkloadEndpoint: model.EndpointKind.POD,
    gm.HostEndpoint: model.EndpointKind.HOST,
    gm.NetworkSet: model.EndpointKind.WORLD,
    gm.Network: model.EndpointKind.WORLD,
}
_PROTOCOLS: Final[Mapping[str, model.Protocol]] = {
    "tcp": model.Protocol.TCP, "6": model.Protocol.TCP,
    "udp": model.Protocol.UDP, "17": model.Protocol.UDP,
    "sctp": model.Protocol.SCTP, "132": model.Protocol.SCTP,
    "icmp": model.Protocol.ICMP, "1": model.Protocol.ICMP,
    "icmp6": model.Protocol.ICMPV6, "icmpv6": model.Protocol.ICMPV6, "58": model.Protocol.ICMPV6,
}
_STAGED_KINDS: Final = frozenset({gm.StagedNetworkPolicy, gm.StagedGlobalNetworkPolicy,
                                  gm.StagedKubernetesNetworkPolicy})
# Name prefixes Felix up to 3.31 put in policy names, by kind; HitFromString
# strips them, but a string or an older Goldmane may still carry them.
_NAME_PREFIXES: Final[Mapping[int, str]] = {
    gm.NetworkPolicy: "knp.default.",
    gm.StagedKubernetesNetworkPolicy: "knp.default.",
    gm.AdminNetworkPolicy: "kanp.adminnetworkpolicy.",
    gm.BaselineAdminNetworkPolicy: "kbanp.baselineadminnetworkpolicy.",
    gm.Profile: "__PROFILE__.",
}
_DENIES: Final = ("deny", "end-of-tier-deny")


def kind_name(kind: int) -> str:
    """Calico's PolicyKind name; the Kubernetes one is ``NetworkPolicy``; unknown numbers stay visible."""
    try:
        return gm.PolicyKind.Name(kind)
    except ValueError:
        return f"PolicyKind{kind}"


def _bare_name(kind: int, name: str) -> str:
    name = name.replace("staged:", "")
    prefix = _NAME_PREFIXES.get(kind)
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def _ref(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


# --- endpoints ------------------------------------------------------------------

_label_cache: dict[tuple[str, ...], dict[str, str]] = {}


def _labels(labels: Sequence[str]) -> Mapping[str, str]:
    key = tuple(labels)
    found = _label_cache.get(key)
    if found is None:
        found = {}
        for label in key:
            k, _, v = label.partition("=")
            if k and not k.startswith(_CALICO_LABEL):
                found[k] = v
        # Huge label lists are not cached: the cache stays bounded in bytes (4096 x 4 KiB).
        if len(key) <= 64 and sum(map(len, key)) <= 4096:
            if len(_label_cache) >= _CACHE_LIMIT:
                _label_cache.clear()
            _label_cache[key] = found
    return found


def _endpoint(kind: model.EndpointKind, name: str, namespace: str, labels: Sequence[str], *,
              ip: str | None = None, aggregate: str = "") -> model.Endpoint:
    ns = namespace if namespace not in ("", "-") else None
    pod = prefix = None
    if kind is model.EndpointKind.POD:
        if name.endswith("*"):
            prefix = name[:-1]
        elif name and name != "-":
            pod = name
        if aggregate.endswith("*"):
            prefix = aggregate[:-1]
    return model.Endpoint(kind=kind, ip=ip, namespace=ns, pod=pod, labels=_labels(labels) if labels else {},
                          pod_prefix=prefix or None)


# --- policy hits ----------------------------------------------------------------


def _hit_from_proto(hit: gm.PolicyHit, *, staged: bool) -> model.PolicyHit:
    action = _ACTIONS.get(hit.action, "unknown")
    if hit.kind == gm.EndOfTier:
        # The hit itself has no name: it is the tier's default action,
        # reached because ``trigger`` selected the endpoint in that tier.
        t = hit.trigger
        name = _bare_name(t.kind, t.name) or "<unknown>"
        ns = t.namespace or None
        return model.PolicyHit(name=name, namespace=ns, kind=kind_name(t.kind) if hit.HasField("trigger")
                               else "EndOfTier", action=f"end-of-tier-{action}", rule_index=None,
                               tier=hit.tier or t.tier or None, trigger=_ref(ns, name),
                               staged=staged or t.kind in _STAGED_KINDS)
    return model.PolicyHit(name=_bare_name(hit.kind, hit.name) or "<unknown>", namespace=hit.namespace or None,
                           kind=kind_name(hit.kind), action=action,
                           rule_index=hit.rule_index if hit.rule_index >= 0 else None, tier=hit.tier or None,
                           staged=staged or hit.kind in _STAGED_KINDS)


def _is_staged_proto(hit: gm.PolicyHit) -> bool:
    kind = hit.trigger.kind if hit.kind == gm.EndOfTier else hit.kind
    return kind in _STAGED_KINDS


def _attribution_from_trace(trace: gm.PolicyTrace) -> tuple[model.PolicyHit, ...]:
    enforced = sorted(trace.enforced_policies, key=lambda h: h.policy_index)
    staged = sorted((h for h in trace.pending_policies if _is_staged_proto(h)), key=lambda h: h.policy_index)
    return (*(_hit_from_proto(h, staged=False) for h in enforced),
            *(_hit_from_proto(h, staged=True) for h in staged))


def _drop(verdict: model.Verdict, hits: Iterable[model.PolicyHit]) -> tuple[str | None, model.DropKind]:
    if verdict is not model.Verdict.DROPPED:
        return None, model.DropKind.NONE
    deciding = deciding_hit(hits)
    if deciding is None:
        return "deny", model.DropKind.POLICY_DENIED
    if deciding.action == "deny":
        return "deny-rule", model.DropKind.POLICY_DENY
    return "end-of-tier-deny", model.DropKind.POLICY_DENIED


def deciding_hit(hits: Iterable[model.PolicyHit]) -> model.PolicyHit | None:
    """The enforced hit that denied: the last enforced deny (rule or end of tier), if any."""
    found = None
    for hit in hits:
        if not hit.staged and hit.action in _DENIES:
            found = hit
    return found


# --- protobuf -------------------------------------------------------------------


def flow_from_proto(pb: gm.Flow, *, node: str | None = None, origin: str = "calico") -> model.Flow:
    """One ``goldmane.Flow`` (from Goldmane's stream or Felix's socket) -> Flow."""
    if not pb.HasField("Key"):
        raise MalformedFlow(NO_KEY, "flow has no key")
    seconds = pb.end_time or pb.start_time
    if seconds <= 0:
        raise MalformedFlow(NO_TIME, "flow has neither an end nor a start time")
    key = pb.Key
    verdict = _VERDICTS.get(key.action, model.Verdict.UNKNOWN)
    attribution = _attribution_from_trace(key.policies) if key.HasField("policies") else ()
    drop_reason, drop_kind = _drop(verdict, attribution)
    unknown = model.EndpointKind.UNKNOWN
    return model.Flow(
        time_ns=seconds * _NS,
        verdict=verdict,
        source=_endpoint(_ENDPOINT_KINDS.get(key.source_type, unknown), key.source_name, key.source_namespace,
                         pb.source_labels),
        destination=_endpoint(_ENDPOINT_KINDS.get(key.dest_type, unknown), key.dest_name, key.dest_namespace,
                              pb.dest_labels),
        protocol=_PROTOCOLS.get(key.proto.lower(), model.Protocol.OTHER),
        destination_port=key.dest_port or None,
        node=node,
        drop_kind=drop_kind,
        drop_reason=drop_reason,
        direction=_DIRECTIONS.get(key.reporter, model.Direction.UNKNOWN),
        attribution=attribution,
        packets=max(0, pb.packets_in + pb.packets_out),
        connections=max(0, pb.num_connections_started),
        origin=origin,
    )


# --- Enterprise flow-log strings and JSON ------------------------------------------

_SHORT_KINDS: Final[Mapping[str, int]] = {
    "np": gm.CalicoNetworkPolicy, "gnp": gm.GlobalNetworkPolicy, "snp": gm.StagedNetworkPolicy,
    "sgnp": gm.StagedGlobalNetworkPolicy, "knp": gm.NetworkPolicy, "sknp": gm.StagedKubernetesNetworkPolicy,
    "kcnp": gm.ClusterNetworkPolicy, "pro": gm.Profile,
}
_SHORT_FORM: Final = re.compile(r"(?P<kind>[a-z]+):(?:(?P<ns>[^/]+)/)?(?P<name>.+)")
_STRING_ACTIONS: Final = frozenset({"allow", "deny", "pass"})


def _kind_of_name_part(tier: str, ns: str | None, rest: str) -> tuple[int, str]:
    """Kind and bare name from a 3.30/3.31 (or Enterprise) name part, namespace already split off."""
    staged = "staged:" in rest
    rest = rest.replace("staged:", "")
    if tier == "__PROFILE__" or rest.startswith("__PROFILE__."):
        return gm.Profile, _bare_name(gm.Profile, rest)
    if rest.startswith("knp.default."):
        kind = gm.StagedKubernetesNetworkPolicy if staged else gm.NetworkPolicy
        return kind, _bare_name(kind, rest)
    for kind in (gm.AdminNetworkPolicy, gm.BaselineAdminNetworkPolicy):
        if rest.startswith(_NAME_PREFIXES[kind]):
            return kind, _bare_name(kind, rest)
    if ns:
        kind = gm.StagedNetworkPolicy if staged else gm.CalicoNetworkPolicy
    else:
        kind = gm.StagedGlobalNetworkPolicy if staged else gm.GlobalNetworkPolicy
    # Up to 3.31 a policy outside tier default had to be *named* <tier>.<name>;
    # Goldmane reports the name without the tier, and so do we.
    return kind, rest[len(tier) + 1:] if tier and rest.startswith(f"{tier}.") else rest


def hit_from_string(text: str) -> tuple[int, model.PolicyHit]:
    """``<index>|<tier>|<name part>|<action>|<rule index>`` (any version) -> (index, PolicyHit)."""
    parts = text.strip().split("|")
    if len(parts) != 5:
        raise MalformedFlow(BAD_FIELD, f"policy {text!r}: expected 5 fields separated by '|'")
    index, tier, name_part, action, rule = parts
    if action not in _STRING_ACTIONS:
        raise MalformedFlow(BAD_FIELD, f"policy {text!r}: unknown action {action!r}")
    try:
        position, rule_index = int(index), int(rule)
    except ValueError:
        raise MalformedFlow(BAD_FIELD, f"policy {text!r}: index and rule index must be integers") from None
    short = _SHORT_FORM.fullmatch(name_part)
    if short is not None and short["kind"] in _SHORT_KINDS:  # 3.32: knp:ns/name
        kind, ns, name = _SHORT_KINDS[short["kind"]], short["ns"], short["name"]
    else:
        ns_part, slash, rest = name_part.partition("/")
        ns = ns_part if slash else None
        kind, name = _kind_of_name_part(tier, ns, rest if slash else name_part)
    if tier == "__PROFILE__":
        tier = ""
    staged = kind in _STAGED_KINDS
    if rule_index == -1:
        hit = model.PolicyHit(name=name, namespace=ns, kind=kind_name(kind), action=f"end-of-tier-{action}",
                              tier=tier or None, trigger=_ref(ns, name), staged=staged)
    else:
        hit = model.PolicyHit(name=name, namespace=ns, kind=kind_name(kind), action=action,
                              rule_index=rule_index if rule_index >= 0 else None, tier=tier or None, staged=staged)
    return position, hit


def _hits_from_strings(values: object, where: str) -> list[tuple[int, model.PolicyHit]]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MalformedFlow(BAD_FIELD, f"{where}: expected a list of strings")
    return sorted((hit_from_string(v) for v in values), key=lambda pair: pair[0])


def _attribution_from_log(policies: object) -> tuple[model.PolicyHit, ...]:
    if policies is None:
        return ()
    if not isinstance(policies, Mapping):
        raise MalformedFlow(BAD_FIELD, "policies: expected an object")
    enforced_key = "enforced_policies" if "enforced_policies" in policies else "all_policies"
    enforced = [hit for _, hit in _hits_from_strings(policies.get(enforced_key), f"policies.{enforced_key}")
                if not hit.staged]
    staged = [hit for _, hit in _hits_from_strings(policies.get("pending_policies"), "policies.pending_policies")
              if hit.staged]
    return (*enforced, *staged)


_LOG_TYPES: Final[Mapping[str, model.EndpointKind]] = {
    "wep": model.EndpointKind.POD, "hep": model.EndpointKind.HOST,
    "ns": model.EndpointKind.WORLD, "net": model.EndpointKind.WORLD,
}


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedFlow(BAD_FIELD, f"{key}: expected a string, got {value!r}")
    return value


def _number(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedFlow(BAD_FIELD, f"{key}: expected an integer, got {value!r}")
    return value


def _log_labels(obj: Mapping[str, Any], key: str) -> Sequence[str]:
    value = obj.get(key)
    if isinstance(value, Mapping):  # {"labels": ["k=v", ...]} as Felix writes it
        value = value.get("labels")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedFlow(BAD_FIELD, f"{key}: expected a list of key=value strings")
    return value


def _log_endpoint(obj: Mapping[str, Any], side: str) -> model.Endpoint:
    kind = _LOG_TYPES.get(_text(obj, f"{side}_type"), model.EndpointKind.POD)
    ip = _text(obj, f"{side}_ip")
    return _endpoint(kind, _text(obj, f"{side}_name"), _text(obj, f"{side}_namespace"),
                     _log_labels(obj, f"{side}_labels"), ip=ip if ip and ip != "-" else None,
                     aggregate=_text(obj, f"{side}_name_aggr"))


def _log_direction(reporter: str) -> model.Direction:
    # "dst, fwd": measured at the destination and forwarded; "fwd" alone is transit traffic.
    parts = {p.strip() for p in reporter.split(",")}
    if "src" in parts:
        return model.Direction.EGRESS
    if "dst" in parts:
        return model.Direction.INGRESS
    return model.Direction.UNKNOWN


def flow_from_flow_log(obj: Mapping[str, Any], *, origin: str = "calico") -> model.Flow:
    """One Calico Enterprise flow-log record (a decoded JSON object) -> Flow."""
    if not isinstance(obj, Mapping):
        raise MalformedFlow(BAD_FIELD, "expected a JSON object")
    seconds = _number(obj, "end_time") or _number(obj, "start_time") or _number(obj, "@timestamp") // 1000
    if seconds <= 0:
        raise MalformedFlow(NO_TIME, "record has no end_time, start_time or @timestamp")
    verdict = {"allow": model.Verdict.FORWARDED, "deny": model.Verdict.DROPPED}.get(
        _text(obj, "action").lower(), model.Verdict.UNKNOWN)
    attribution = _attribution_from_log(obj.get("policies"))
    drop_reason, drop_kind = _drop(verdict, attribution)
    return model.Flow(
        time_ns=seconds * _NS,
        verdict=verdict,
        source=_log_endpoint(obj, "source"),
        destination=_log_endpoint(obj, "dest"),
        protocol=_PROTOCOLS.get(str(obj.get("proto", "")).lower(), model.Protocol.OTHER),
        source_port=_number(obj, "source_port") or None,
        destination_port=_number(obj, "dest_port") or None,
        node=_text(obj, "host") or None,
        drop_kind=drop_kind,
        drop_reason=drop_reason,
        direction=_log_direction(_text(obj, "reporter")),
        attribution=attribution,
        packets=max(0, _number(obj, "packets_in") + _number(obj, "packets_out")),
        connections=max(0, _number(obj, "num_flows_started") if "num_flows_started" in obj
                        else _number(obj, "num_flows")),
        origin=origin,
    )


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A flow-log record that gave no Flow: the 1-based line where the problem is, and why."""

    line_no: int
    reason: str


def records_from_flow_log(text: str) -> Iterator[model.Flow | BadRecord]:
    """The records of a flow-log text: JSON lines, or pretty-printed objects one after another.

    Invalid JSON is reported, not repaired: a trailing comma (as in the
    documentation's example) is named with the line it is on, and reading
    goes on at the next record. Felix itself writes valid JSON, so a
    tolerant parser would only hide truncated or corrupt lines.
    """
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        pos = _skip_space(text, pos)
        if pos >= end:
            return
        start, start_line = pos, text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield _json_error(text, exc)
            pos = _next_record(text, start)
            continue
        try:
            yield flow_from_flow_log(obj)
        except MalformedFlow as exc:
            yield BadRecord(start_line, str(exc))


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_error(text: str, exc: json.JSONDecodeError) -> BadRecord:
    before = text[:exc.pos].rstrip()
    if before.endswith(",") and text[exc.pos:exc.pos + 1] in ("]", "}"):
        comma_line = before.count("\n") + 1
        return BadRecord(comma_line, f"{NOT_JSON}: trailing comma before {text[exc.pos]!r} "
                                     f"(line {comma_line}); JSON allows none")
    return BadRecord(exc.lineno, f"{NOT_JSON}: {exc.msg} at line {exc.lineno} column {exc.colno}")


def _next_record(text: str, pos: int) -> int:
    """Where the record after a broken one starts: the next line beginning with '{' at column 0.

    Searching from the broken record's start (not from the error) keeps the
    line after a truncated JSON line, which the decoder had read into.
    """
    found = text.find("\n{", pos)
    return len(text) if found < 0 else found + 1
