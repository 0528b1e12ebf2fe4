"""Property tests: the indexed engine agrees with a naive reading of the spec.

Hypothesis draws small clusters (a few namespaces, pods with labels, named
ports and host networking, nodes, up to four policies with every kind of
peer, port and policyTypes) as Kubernetes JSON, so the parser is exercised
too, and asks both evaluators about random connections between pods, nodes
and outside addresses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import queries
from drop_explainer.policy.engine import DirectionVerdict, Engine
from tests import naive_engine

Json = dict[str, Any]

NODES = (("node-1", "172.18.0.11", "10.244.1.0/24", "fd00:244:1::/64"),
         ("node-2", "172.18.0.12", "10.244.2.0/24", "fd00:244:2::/64"))
OUTSIDE = ("203.0.113.7", "10.244.1.250", "2001:db8::7", "fd00:244:2::99", "8.8.8.8")
CIDRS = ("10.244.0.0/16", "10.244.1.0/24", "172.18.0.0/16", "0.0.0.0/0", "203.0.113.0/24", "::/0", "fd00:244::/32")
EXCEPTS = ("10.244.1.0/25", "10.244.2.12/30", "172.18.0.12/32", "203.0.113.0/28", "fd00:244:1::/64", "2001:db8::/64")
PORTS = (53, 80, 443, 8080, 9090)
PORT_NAMES = ("http", "dns")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POD_KEYS = {"app": ("a", "b"), "tier": ("x", "y")}
NS_KEYS = {"team": ("a", "b"), "env": ("prod", "dev")}


def _labels(keys: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    pairs = st.sampled_from([(k, v) for k, vs in sorted(keys.items()) for v in vs])
    return st.lists(pairs, max_size=2, unique_by=lambda kv: kv[0]).map(dict)


def _selector(keys: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[Json]:
    """Mostly selectors that can match: empty, one pair, or a few expressions."""
    key = st.sampled_from([*sorted(keys), "kubernetes.io/metadata.name"])
    values = st.lists(st.sampled_from(("a", "b", "x", "y", "prod", "ns0", "ns1")), min_size=1, max_size=2,
                      unique=True)
    expr = st.one_of(
        st.builds(lambda k, op, v: {"key": k, "operator": op, "values": v}, key, st.sampled_from(("In", "NotIn")),
                  values),
        st.builds(lambda k, op: {"key": k, "operator": op}, key, st.sampled_from(("Exists", "DoesNotExist"))),
    )
    pairs = [(k, v) for k, vs in sorted(keys.items()) for v in vs] + [("kubernetes.io/metadata.name", "ns1")]
    match = st.lists(st.sampled_from(pairs), max_size=2, unique_by=lambda kv: kv[0]).map(dict)
    combined = st.builds(
        lambda m, e: {k: v for k, v in (("matchLabels", m), ("matchExpressions", e)) if v},
        match,
        st.lists(expr, max_size=2),
    )
    return st.one_of(st.just({}), match.map(lambda m: {"matchLabels": m} if m else {}), combined)


@st.composite
def _peer(draw: st.DrawFn) -> Json:
    shape = draw(st.sampled_from(("pod", "ns", "both", "ip", "ip")))
    if shape == "ip":
        block: Json = {"cidr": draw(st.sampled_from(CIDRS))}
        excepts = draw(st.lists(st.sampled_from(EXCEPTS), max_size=2, unique=True))
        if excepts:
            block["except"] = excepts
        return {"ipBlock": block}
    peer: Json = {}
    if shape in ("pod", "both"):
        peer["podSelector"] = draw(_selector(POD_KEYS))
    if shape in ("ns", "both"):
        peer["namespaceSelector"] = draw(_selector(NS_KEYS))
    return peer


@st.composite
def _policy_port(draw: st.DrawFn) -> Json:
    out: Json = {}
    proto = draw(st.sampled_from((None, *PROTOCOLS)))
    if proto is not None:
        out["protocol"] = proto
    kind = draw(st.sampled_from(("none", "number", "range", "name")))
    if kind == "number":
        out["port"] = draw(st.sampled_from(PORTS))
    elif kind == "range":
        start = draw(st.sampled_from(PORTS))
        out |= {"port": start, "endPort": draw(st.sampled_from([p for p in (*PORTS, 8090) if p >= start]))}
    elif kind == "name":
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    return out


def _maybe_list(items: st.SearchStrategy[Json], max_size: int) -> st.SearchStrategy[list[Json] | None]:
    """Absent (None), empty, or a few items: the three mean different things."""
    return st.one_of(st.none(), st.just([]), st.lists(items, min_size=1, max_size=max_size))


@st.composite
def _rule(draw: st.DrawFn, peers_key: str) -> Json:
    rule: Json = {}
    peers = draw(_maybe_list(_peer(), 3))
    if peers is not None:
        rule[peers_key] = peers
    ports = draw(_maybe_list(_policy_port(), 2))
    if ports is not None:
        rule["ports"] = ports
    return rule


@st.composite
def _policy(draw: st.DrawFn, index: int) -> Json:
    spec: Json = {"podSelector": draw(_selector(POD_KEYS))}
    for key, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = draw(_maybe_list(_rule(peers_key), 3))
        if rules is not None:
            spec[key] = rules
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    ns = draw(st.sampled_from(("ns0", "ns0", "ns1", "ns1", "ns2", "lonely")))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"pol{index}", "namespace": ns}, "spec": spec}


@st.composite
def _pod(draw: st.DrawFn, index: int, namespaces: int) -> Json:
    node, node_ip, v4_cidr, v6_cidr = draw(st.sampled_from(NODES))
    host_network = draw(st.integers(0, 3)) == 0
    if host_network:
        ip = node_ip
    elif draw(st.integers(0, 3)) == 0:
        ip = f"{v6_cidr.split('/')[0]}{index + 10:x}"
    else:
        ip = f"{v4_cidr.rsplit('.', 1)[0]}.{index + 10}"
    defined = st.tuples(st.sampled_from(PORT_NAMES), st.sampled_from(PORTS), st.sampled_from(("TCP", "UDP")))
    ports = draw(st.lists(defined, max_size=2, unique_by=lambda p: p[0]))
    container = {"name": "c", "ports": [{"name": n, "containerPort": p, "protocol": pr} for n, p, pr in ports]}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod{index}", "namespace": f"ns{draw(st.integers(0, namespaces - 1))}",
                     "labels": draw(_labels(POD_KEYS))},
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [container]},
        "status": {"phase": "Running", "hostIP": node_ip, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


@st.composite
def cluster_documents(draw: st.DrawFn) -> list[Json]:
    n_ns = draw(st.integers(2, 3))
    docs: list[Json] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{i}", "labels": draw(_labels(NS_KEYS))}}
        for i in range(n_ns)
    ]
    docs += [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
         "spec": {"podCIDRs": [v4, v6]}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
        for name, ip, v4, v6 in NODES
    ]
    docs += [draw(_pod(i, n_ns)) for i in range(draw(st.integers(2, 6)))]
    docs += [draw(_policy(i)) for i in range(draw(st.sampled_from((0, 1, 2, 2, 3, 3, 4))))]
    return docs


def _endpoints(docs: list[Json]) -> list[str]:
    pods = [d for d in docs if d["kind"] == "Pod"]
    refs = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]
    refs += [p["status"]["podIP"] for p in pods if not p["spec"]["hostNetwork"]]
    return refs + [ip for _, ip, _, _ in NODES] + list(OUTSIDE)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Json], list[tuple[str, str, int, str]]]:
    docs = draw(cluster_documents())
    pods = [f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in docs if d["kind"] == "Pod"]
    ends = st.one_of(st.sampled_from(pods), st.sampled_from(_endpoints(docs)))
    conns = draw(st.lists(st.tuples(ends, ends, st.sampled_from((*PORTS, 8081)), st.sampled_from(("TCP", *PROTOCOLS))),
                          min_size=8, max_size=25))
    return docs, conns


def _state(docs: list[Json], as_yaml: bool) -> ClusterState:
    listing = {"apiVersion": "v1", "kind": "List", "items": docs}
    text = yaml.safe_dump(listing) if as_yaml else json.dumps(listing)
    return ClusterState.build(parse_documents("generated", text))


def _engine_side(d: DirectionVerdict) -> naive_engine.Side:
    return naive_engine.Side(
        d.allowed, d.isolated, frozenset(p.key for p in d.policies), frozenset((p.key, i) for p, i in d.allowed_by)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(), st.booleans())
def test_engine_verdicts_equal_the_naive_reading_of_the_spec(
    scenario: tuple[list[Json], list[tuple[str, str, int, str]]], as_yaml: bool
) -> None:
    """Allowed, isolated, isolating policies and admitting rules agree per direction."""
    docs, conns = scenario
    state = _state(docs, as_yaml)
    engine = Engine(state)
    for source, destination, port, protocol in conns:
        query = queries.Query(source, destination, port, protocol)
        verdict = engine.evaluate(queries.connection(state, query))
        expected = naive_engine.evaluate(state, source, destination, port, protocol)
        assert _engine_side(verdict.ingress) == expected.ingress, (query, "ingress")
        assert _engine_side(verdict.egress) == expected.egress, (query, "egress")
        assert verdict.allowed == (expected.ingress.allowed and expected.egress.allowed)
