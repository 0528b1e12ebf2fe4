"""Differential tests: the engine agrees with the naive CNP/CCNP reading of the reference, and the test has teeth.

Hypothesis draws small Cilium clusters (namespaces with labels, pods with
labels, service accounts, named ports and host networking on two nodes) with
up to four policies of the three kinds Cilium enforces together
(CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, Kubernetes
NetworkPolicy), every L3 peer form (endpoints with ``k8s:``/``any:``/
``reserved:`` keys, the namespace, namespace labels and service account;
entities; CIDR and CIDRSet with except), ports (numbers, ranges, names, ``0``,
every protocol incl. ``ANY``), deny sections, ``enableDefaultDeny``, absent /
empty / ``{}`` lists and the odd invalid object, and agent settings
(allow-localhost, policy-enforcement-mode, policy-cidr-match-mode). Both
evaluators are asked about random connections between pods, nodes, host-network
pods and outside addresses (never a pod to itself).

Three tests:
- the product engine against ``tests/naive_cilium.py`` on such states
  (the product engine evaluates CNPs since the rule model landed);
- the same on states with Kubernetes NetworkPolicies only, which the engine
  evaluates today under its cilium profile: this runs now and keeps the naive
  evaluator's KNP-under-Cilium reading honest;
- planted bugs: each mutant is a copy of the naive evaluator's source with one
  semantic point broken; the same generator and comparison must find a state
  where the mutant and the original disagree, so a product bug of that kind
  cannot pass the differential test unseen.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import profiles, queries
from drop_explainer.policy.engine import Engine
from tests import naive_cilium
from tests.naive_cilium import Settings
from tests.unit.policy import test_cilium_semantics as semantics

Json = dict[str, Any]
Conn = tuple[str, str, int, str]
Scenario = tuple[list[Json], list[Conn], Settings]
Evaluator = Callable[[Sequence[Json], Conn, Settings], bool]

NODES = (("node-1", "172.18.0.11", "10.244.1.0/24"), ("node-2", "172.18.0.12", "10.244.2.0/24"))
OUTSIDE = ("203.0.113.7", "8.8.8.8", "10.244.1.250")
CIDRS: Mapping[str, tuple[str, ...]] = {
    "10.244.0.0/16": ("10.244.1.0/24", "10.244.2.0/25"), "10.244.1.0/24": ("10.244.1.128/25",),
    "172.18.0.0/16": ("172.18.0.12/32",), "0.0.0.0/0": ("8.8.8.0/24", "10.0.0.0/8"),
    "203.0.113.0/24": ("203.0.113.0/28",), "8.8.8.8/32": (),
}
"""Each CIDR with the excepts that lie inside it (Cilium refuses others)."""
PORTS = (53, 80, 443, 8080)
PORT_NAMES = ("http", "dns")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POD_KEYS = {"app": ("a", "b"), "tier": ("x", "y")}
NS_KEYS = {"team": ("a", "b"), "env": ("prod", "dev")}
ENTITIES = ("host", "remote-node", "world", "cluster", "all", "none")


def _labels(keys: Mapping[str, tuple[str, ...]], min_size: int = 0) -> st.SearchStrategy[dict[str, str]]:
    pairs = st.sampled_from([(k, v) for k, vs in sorted(keys.items()) for v in vs])
    return st.lists(pairs, min_size=min_size, max_size=2, unique_by=lambda kv: kv[0]).map(dict)


# --- Cilium selectors: label sources, namespace, namespace labels, service account, reserved ----------------


def _pod_label_key(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(("", "", "k8s:", "any:", "container:"))) + draw(st.sampled_from(sorted(POD_KEYS)))


@st.composite
def _cilium_selector(draw: st.DrawFn, peer: bool) -> Json:
    """Mostly selectors that can match; pod keys with every source prefix, and Cilium's own keys."""
    match: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(("pod", "pod", "ns", "nslabel", "nslabel" if peer else "pod", "sa",
                                     "reserved" if peer else "pod")))
        if kind == "pod":
            key = _pod_label_key(draw)
            match[key] = draw(st.sampled_from(POD_KEYS[key.rpartition(":")[2]]))
        elif kind == "ns":
            match[draw(st.sampled_from(("k8s:", "")))
                  + naive_cilium.NS_KEY] = draw(st.sampled_from(("ns0", "ns1", "ns2")))
        elif kind == "nslabel":
            key = draw(st.sampled_from(sorted(NS_KEYS)))
            match[naive_cilium.NS_LABELS + key] = draw(st.sampled_from(NS_KEYS[key]))
        elif kind == "sa":
            match["k8s:" + naive_cilium.SA_KEY] = draw(st.sampled_from(("default", "sa1")))
        else:
            match[draw(st.sampled_from(("reserved:host", "reserved:remote-node", "reserved:world")))] = ""
    out: Json = {"matchLabels": match} if match else {}
    if draw(st.integers(0, 3)) == 0:
        key = _pod_label_key(draw)
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        expr: Json = {"key": key, "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(st.sampled_from(POD_KEYS[key.rpartition(":")[2]]), min_size=1,
                                           max_size=2, unique=True))
        out["matchExpressions"] = [expr]
    return out


@st.composite
def _port_rule(draw: st.DrawFn) -> Json:
    out: Json = {}
    proto = draw(st.sampled_from((None, "ANY", *PROTOCOLS)))
    if proto is not None:
        out["protocol"] = proto
    kind = draw(st.sampled_from(("number", "number", "range", "name", "zero")))
    if kind == "number":
        out["port"] = str(draw(st.sampled_from(PORTS)))
    elif kind == "range":
        start = draw(st.sampled_from(PORTS))
        out |= {"port": str(start), "endPort": draw(st.sampled_from([p for p in (*PORTS, 8090) if p >= start]))}
    elif kind == "name":
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    else:
        out["port"] = "0"
    return out


@st.composite
def _cilium_entry(draw: st.DrawFn, egress: bool) -> Json:
    """One ingress/egress (deny) item: at most one L3 field, maybe explicitly empty, maybe toPorts."""
    d = "to" if egress else "from"
    entry: Json = {}
    l3 = draw(st.sampled_from(("none", "endpoints", "endpoints", "entities", "cidr", "cidrset", "empty", "two")))
    if l3 in ("endpoints", "two"):
        entry[f"{d}Endpoints"] = draw(st.lists(_cilium_selector(True), min_size=1, max_size=2))
    if l3 == "entities":
        entry[f"{d}Entities"] = draw(st.lists(st.sampled_from(ENTITIES), min_size=1, max_size=2, unique=True))
    if l3 in ("cidr", "two"):
        entry[f"{d}CIDR"] = draw(st.lists(st.sampled_from(sorted(CIDRS)), min_size=1, max_size=2, unique=True))
    if l3 == "cidrset":
        cidr = draw(st.sampled_from(sorted(CIDRS)))
        item: Json = {"cidr": cidr}
        excepts = draw(st.lists(st.sampled_from(CIDRS[cidr]), max_size=1)) if CIDRS[cidr] else []
        if excepts:
            item["except"] = excepts
        entry[f"{d}CIDRSet"] = [item]
    if l3 == "empty":
        entry[draw(st.sampled_from((f"{d}Endpoints", f"{d}Entities", f"{d}CIDR")))] = []
    if draw(st.booleans()):
        entry["toPorts"] = [{"ports": draw(st.lists(_port_rule(), min_size=1, max_size=2))}]
    return entry


def _maybe_list(items: st.SearchStrategy[Json], max_size: int) -> st.SearchStrategy[list[Json] | None]:
    """Absent (None), empty, or a few items: the three mean different things."""
    return st.one_of(st.none(), st.just([]), st.lists(items, min_size=1, max_size=max_size))


@st.composite
def _cilium_rule(draw: st.DrawFn, clusterwide: bool) -> Json:
    rule: Json = {}
    if clusterwide and draw(st.integers(0, 5)) == 0:
        rule["nodeSelector"] = {}
    else:
        rule["endpointSelector"] = draw(_cilium_selector(False))
    for section in ("ingress", "ingressDeny", "egress", "egressDeny"):
        entries = draw(_maybe_list(_cilium_entry(section.startswith("egress")), 2)
                       if not section.endswith("Deny") or draw(st.integers(0, 2)) == 0 else st.none())
        if entries is not None:
            rule[section] = entries
    flags = {k: draw(st.booleans()) for k in ("ingress", "egress") if draw(st.integers(0, 3)) == 0}
    if flags:
        rule["enableDefaultDeny"] = flags
    return rule


@st.composite
def _cilium_policy(draw: st.DrawFn, index: int) -> Json:
    clusterwide = draw(st.integers(0, 2)) == 0
    doc: Json = {"apiVersion": "cilium.io/v2",
                 "kind": naive_cilium.CCNP if clusterwide else naive_cilium.CNP,
                 "metadata": {"name": f"cpol{index}"}}
    if not clusterwide:
        doc["metadata"]["namespace"] = draw(st.sampled_from(("ns0", "ns1", "ns2")))
    if draw(st.integers(0, 3)) == 0:
        doc["specs"] = draw(st.lists(_cilium_rule(clusterwide), min_size=1, max_size=2))
    else:
        doc["spec"] = draw(_cilium_rule(clusterwide))
    return doc


# --- Kubernetes NetworkPolicy (as in test_engine_matches_naive, Cilium's CIDR view) ------------------------


def _selector(keys: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[Json]:
    pairs = [(k, v) for k, vs in sorted(keys.items()) for v in vs]
    match = st.lists(st.sampled_from(pairs), max_size=2, unique_by=lambda kv: kv[0]).map(dict)
    return st.one_of(st.just({}), match.map(lambda m: {"matchLabels": m} if m else {}))


@st.composite
def _knp_peer(draw: st.DrawFn) -> Json:
    shape = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if shape == "ip":
        cidr = draw(st.sampled_from(sorted(CIDRS)))
        block: Json = {"cidr": cidr}
        excepts = draw(st.lists(st.sampled_from(CIDRS[cidr]), max_size=1)) if CIDRS[cidr] else []
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
def _knp_port(draw: st.DrawFn) -> Json:
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


@st.composite
def _knp(draw: st.DrawFn, index: int) -> Json:
    spec: Json = {"podSelector": draw(_selector(POD_KEYS))}
    for key, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = draw(_maybe_list(st.fixed_dictionaries({}, optional={
            peers_key: st.lists(_knp_peer(), max_size=2), "ports": st.lists(_knp_port(), max_size=2)}), 2))
        if rules is not None:
            spec[key] = rules
    types_ = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types_ is not None:
        spec["policyTypes"] = types_
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"kpol{index}", "namespace": draw(st.sampled_from(("ns0", "ns1", "ns2")))},
            "spec": spec}


# --- the cluster and the questions -------------------------------------------------------------------------


@st.composite
def _pod(draw: st.DrawFn, index: int) -> Json:
    node, node_ip, cidr = draw(st.sampled_from(NODES))
    host_network = draw(st.integers(0, 4)) == 0
    ip = node_ip if host_network else f"{cidr.rsplit('.', 1)[0]}.{index + 10}"
    defined = st.tuples(st.sampled_from(PORT_NAMES), st.sampled_from(PORTS), st.sampled_from(("TCP", "UDP")))
    ports = draw(st.lists(defined, max_size=2, unique_by=lambda p: p[0]))
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod{index}", "namespace": f"ns{draw(st.integers(0, 2))}",
                     "labels": draw(_labels(POD_KEYS))},
        "spec": {"nodeName": node, "hostNetwork": host_network,
                 "serviceAccountName": draw(st.sampled_from(("default", "sa1"))),
                 "containers": [{"name": "c", "ports": [{"name": n, "containerPort": p, "protocol": pr}
                                                        for n, p, pr in ports]}]},
        "status": {"phase": "Running", "hostIP": node_ip, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


@st.composite
def scenarios(draw: st.DrawFn, cilium: bool = True) -> Scenario:
    docs: list[Json] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{i}", "labels": draw(_labels(NS_KEYS, 1))}}
        for i in range(3)
    ]
    docs += [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"podCIDRs": [cidr]},
              "status": {"addresses": [{"type": "InternalIP", "address": ip}]}} for name, ip, cidr in NODES]
    docs += [draw(_pod(i)) for i in range(draw(st.integers(2, 6)))]
    for i in range(draw(st.sampled_from((0, 1, 2, 2, 3, 3, 4)))):
        docs.append(draw(_cilium_policy(i)) if cilium and draw(st.integers(0, 3)) > 0 else draw(_knp(i)))
    pods = [d for d in docs if d["kind"] == "Pod"]
    refs = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]
    refs += [p["status"]["podIP"] for p in pods if not p["spec"]["hostNetwork"]]
    refs += [ip for _, ip, _ in NODES] + list(OUTSIDE)
    ends = st.sampled_from(refs)
    conns = draw(st.lists(st.tuples(ends, ends, st.sampled_from((*PORTS, 8081)), st.sampled_from(PROTOCOLS)),
                          min_size=8, max_size=20))
    conns = [c for c in conns if not _same_pod(docs, c[0], c[1])]
    conf = Settings(allow_localhost=draw(st.sampled_from(("always", "always", "policy"))),
                    enforcement=draw(st.sampled_from(("default", "default", "default", "always"))),
                    cidr_match_nodes=draw(st.integers(0, 3)) == 0)
    return docs, conns, conf


def _same_pod(docs: Sequence[Json], a: str, b: str) -> bool:
    """A pod never asks about itself (that traffic never leaves it)."""
    ea, eb = naive_cilium.end_of(docs, a), naive_cilium.end_of(docs, b)
    return ea.pod is not None and ea.pod is eb.pod


# --- the evaluators compared --------------------------------------------------------------------------------


def _profile(conf: Settings) -> profiles.Profile:
    pairs = [f"allow-localhost={conf.allow_localhost}", f"policy-enforcement-mode={conf.enforcement}"]
    if conf.cidr_match_nodes:
        pairs.append("policy-cidr-match-mode=nodes")
    return profiles.parse(",".join(["cilium", *pairs]))


def product_verdicts(docs: Sequence[Json], conns: Sequence[Conn], conf: Settings) -> list[bool]:
    """The engine's answers, through the loader and the what-if path the CLI uses."""
    state = ClusterState.build(parse_documents("generated.json", json.dumps({"apiVersion": "v1", "kind": "List",
                                                                            "items": list(docs)})))
    engine = Engine(state, _profile(conf))
    return [engine.evaluate(queries.connection(state, queries.Query(*c))).allowed for c in conns]


def naive_verdicts(module: types.ModuleType, docs: Sequence[Json], conns: Sequence[Conn], conf: Settings) -> list[bool]:
    return [module.evaluate(docs, *c, settings=conf).allowed for c in conns]


def first_disagreement(a: list[bool], b: list[bool], conns: Sequence[Conn]) -> str | None:
    for conn, x, y in zip(conns, a, b, strict=True):
        if x != y:
            return f"{conn}: {x} vs {y}"
    return None


_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                     phases=[Phase.explicit, Phase.reuse, Phase.generate],
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""No shrinking: a disagreement is reported as the first state found (its documents are in the message), so
an expected failure costs seconds, not the whole shrinking budget. Derandomized: CI runs the same 200 states
every time (a new disagreement is found by widening max_examples locally, not by a flaky run)."""


@_SETTINGS
@given(scenarios())
def test_engine_verdicts_equal_the_naive_reading_of_the_reference(scenario: Scenario) -> None:
    """CNP, CCNP and KNP together: allowed or not, per connection, as the naive evaluator reads them."""
    docs, conns, conf = scenario
    expected = naive_verdicts(naive_cilium, docs, conns, conf)
    got = product_verdicts(docs, conns, conf)
    assert first_disagreement(got, expected, conns) is None, (conf, json.dumps(docs))


@_SETTINGS
@given(scenarios(cilium=False))
def test_engine_and_naive_agree_on_network_policies_under_cilium(scenario: Scenario) -> None:
    """Kubernetes NetworkPolicy alone, which the engine already evaluates with the cilium profile."""
    docs, conns, conf = scenario
    expected = naive_verdicts(naive_cilium, docs, conns, conf)
    got = product_verdicts(docs, conns, conf)
    assert first_disagreement(got, expected, conns) is None, (conf, json.dumps(docs))


# --- planted bugs ------------------------------------------------------------------------------------------

SOURCE = Path(naive_cilium.__file__).read_text(encoding="utf-8")

MUTANTS: Mapping[str, tuple[str, str]] = {
    # policy-kinds.md 1.2: a CNP peer selector is confined to the policy's namespace.
    "cnp-peer-any-namespace": ('return peer.pod is not None and peer.pod["metadata"]["namespace"] == rule.namespace',
                               "return peer.pod is not None"),
    # 1.2: a CCNP peer selector selects pods only, never a node or the world.
    "ccnp-peer-selects-non-pods": ('        return peer.kind == "pod"\n', "        return True\n"),
    # 1.2: a CCNP's endpointSelector has no implicit namespace.
    "ccnp-subject-confined": ("    if rule.kind == CNP:\n        if pod",
                              "    if rule.kind in (CNP, CCNP):\n        if pod"),
    # 1.2: a CNP's subject always has the policy's namespace.
    "cnp-subject-any-namespace": ('        if pod["metadata"]["namespace"] != rule.namespace:\n'
                                  "            return False\n", ""),
    # 1.2 (1.19.4 code): namespace-label keys select across namespaces.
    "namespace-labels-confined": ("    if any(bare.startswith(NS_LABELS) for _, bare in keys):\n"
                                  "        return True", ""),
    # 1.3: a key without a source matches any source; k8s: only k8s labels.
    "source-prefix-ignored": ('    return [v for s, k, v in labels if k == bare and source in ("any", s)]',
                              "    return [v for s, k, v in labels if k == bare]"),
    # 1.7 rows 1 and 2: {} allows nothing; toPorts without L3 is any peer.
    "empty-rule-allows-all": ('        return bool(entry.get("toPorts"))', "        return True"),
    # 1.7 row 3: an explicit empty L3 list selects nothing.
    "empty-l3-list-wildcard": ("    items = entry[name] or []\n",
                               "    items = entry[name] or []\n    if not items:\n        return True\n"),
    # 1.4: CIDRs never match pods (or, by default, nodes).
    "cidr-matches-cluster": ('    return peer.kind == "world" or (settings.cidr_match_nodes and peer.kind in '
                             '("host", "remote-node"))', "    return True"),
    # 1.4: except carves out of its CIDR.
    "cidr-except-ignored": ('_in(peer.ip, s["cidr"]) and not any(_in(peer.ip, e) for e in s.get("except") or [])',
                            '_in(peer.ip, s["cidr"])'),
    # 1.4: cluster is not world.
    "cluster-includes-world": ('        return peer.kind in ("pod", "host", "remote-node")', "        return True"),
    # 1.4, layer3.rst: host is only the endpoint's own node.
    "every-node-is-host": ('kind = "host" if end.node == (subject.get("spec") or {}).get("nodeName") else '
                           '"remote-node"', 'kind = "host"'),
    # 1.5: ANY is TCP, UDP and SCTP.
    "any-is-tcp-only": ('(ANY_PROTOCOLS if proto == "ANY" else (proto,))',
                        '(("TCP",) if proto == "ANY" else (proto,))'),
    # 1.5: endPort is inclusive.
    "end-port-exclusive": ('    return first <= port <= int(pp.get("endPort") or first)',
                           '    return first <= port < int(pp.get("endPort") or first + 1)'),
    # 1.5: port "0" is every port.
    "port-zero-is-port-zero": ("    if first == 0:\n        return True\n", ""),
    # 1.5: a named port is the destination's port of that name and protocol.
    "named-port-any-protocol": ('\n        and (cp.get("protocol") or "TCP") == protocol', ""),
    # 1.9: a matching deny wins over every allow.
    "allow-beats-deny": ("    if denied:\n", "    if denied and not allowed:\n"),
    # 1.8: enableDefaultDeny false does not put the endpoint in default deny.
    "default-deny-flag-ignored": ("    return True if flag is None else bool(flag)", "    return True"),
    # 1.1: one L3 field per entry, else the object is refused.
    "two-l3-fields-accepted": ("                if sum(1 for f in fields if entry.get(f)) > 1:",
                               "                if sum(1 for f in fields if entry.get(f)) > 2:"),
    # 5.1: the local host reaches endpoints in ingress default deny unless allow-localhost=policy.
    "no-allow-localhost": ('            and peer.kind == "host"):', "            and False):"),
    # 1.10: policy-enforcement-mode=always puts every endpoint in default deny.
    "enforcement-always-ignored": ('        return Side(settings.enforcement != "always", '
                                   'settings.enforcement == "always")', "        return Side(True, False)"),
    # 1.9 / Cilium's KNP translation: an ipBlock is a CIDR selector, blind to pods.
    "knp-ip-block-sees-pods": ("        return cidr_visible(peer, settings) and _in(", "        return _in("),
}


def mutant(name: str) -> types.ModuleType:
    """A copy of the naive evaluator with one planted bug (the original text must occur exactly once)."""
    old, new = MUTANTS[name]
    assert SOURCE.count(old) == 1, f"mutant {name}: the text to replace occurs {SOURCE.count(old)} times"
    return load_copy(f"naive_cilium_{name.replace('-', '_')}", SOURCE.replace(old, new))


def load_copy(name: str, text: str) -> types.ModuleType:
    """The source as a module of its own (registered while it runs: dataclasses look their module up)."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        exec(compile(text, f"<{name}>", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


class _AllCaught(Exception):
    """Every planted bug has been shown: the search may stop."""


@functools.cache
def planted_bugs_caught() -> Mapping[str, str]:
    """One derandomized pass of the generator over every mutant: mutant -> the first disagreement seen.

    The states are drawn once for all mutants (drawing dominates the cost), and each mutant is compared with
    the original on every state until it is caught; the search ends when all are, or after 4,000 states.
    """
    mutants = {name: mutant(name) for name in MUTANTS}
    caught: dict[str, str] = {}

    @settings(max_examples=4000, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(scenarios())
    def search(scenario: Scenario) -> None:
        docs, conns, conf = scenario
        expected = naive_verdicts(naive_cilium, docs, conns, conf)
        for name, module in mutants.items():
            if name not in caught:
                why = first_disagreement(expected, naive_verdicts(module, docs, conns, conf), conns)
                if why is not None:
                    caught[name] = f"{why} (original vs mutant), {conf}"
        if len(caught) == len(mutants):
            raise _AllCaught

    with contextlib.suppress(_AllCaught):
        search()
    return caught


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_differential_comparison_catches_a_planted_bug(name: str) -> None:
    """The generator reaches the broken point and the comparison reports it, within a bounded search."""
    caught = planted_bugs_caught()
    assert name in caught, f"no generated state shows the planted bug {name}"


def test_an_unchanged_copy_is_not_caught() -> None:
    """The comparison itself does not invent disagreements: a copy without a bug agrees everywhere."""
    module = load_copy("naive_cilium_copy", SOURCE)

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenarios())
    def agrees(scenario: Scenario) -> None:
        docs, conns, conf = scenario
        assert first_disagreement(naive_verdicts(naive_cilium, docs, conns, conf),
                                  naive_verdicts(module, docs, conns, conf), conns) is None

    agrees()


def test_the_documentation_table_catches_every_planted_bug() -> None:
    """The table of test_cilium_semantics has teeth too: each mutant gets at least one documented verdict wrong."""
    table = [(case, semantics.documents(case)) for case in semantics.CASES]
    missed = []
    for name in sorted(MUTANTS):
        broken = mutant(name)
        if all(broken.evaluate(docs, src, dst, port, proto, settings=case.settings).allowed == ok
               for case, docs in table for src, dst, port, proto, ok in case.checks):
            missed.append(name)
    assert missed == []
