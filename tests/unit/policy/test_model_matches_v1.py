"""One model for every kind: NetworkPolicy v1 compiled into it decides exactly as the v1 engine does.

The random clusters and connections are those of the v1 differential test
(test_engine_matches_naive.py: every kind of peer, port, policyTypes and
empty list). For each side that a pod enforces, the compiled rules that
select it and admit the peer must be the engine's (policy, rule) pairs, and
isolation the same. This is what lets the Cilium kinds share the evaluator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_matches_naive import _state, scenarios
from world import netpol, state_with

from drop_explainer.cluster.objects import NetworkPolicy, PolicyType
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import evaluating, queries
from drop_explainer.policy.engine import Engine
from drop_explainer.policy.kinds import networkpolicy
from drop_explainer.policy.kinds.cilium import NS_KEY
from drop_explainer.policy.model import CompiledPolicy, Direction, PeerKind, Selector

Compile = Callable[[NetworkPolicy], CompiledPolicy]


def mismatches(state: ClusterState, conns: list[tuple[str, str, int, str]], compile_: Compile) -> list[Any]:
    engine = Engine(state)
    rules = [r for p in state.policies.values() for r in compile_(p).rules]
    out: list[Any] = []
    for src, dst, port, proto in conns:
        try:
            conn = queries.connection(state, queries.Query(src, dst, port, proto))
        except queries.BadQuery:
            continue
        for ptype, direction in ((PolicyType.INGRESS, Direction.INGRESS), (PolicyType.EGRESS, Direction.EGRESS)):
            subject, other = ((conn.destination, conn.source) if ptype is PolicyType.INGRESS
                              else (conn.source, conn.destination))
            side = engine.direction(conn, ptype)
            if not subject.is_pod or subject.pod is None:
                if side.isolated:
                    out.append((src, dst, port, proto, ptype, "isolated non-pod"))
                continue
            selecting = evaluating.selecting(rules, direction, evaluating.pod_identity(state, subject))
            ident, _ = evaluating.peer_identity(state, other, subject.pod.node_name)
            model = evaluating.decide(state, selecting, other, other_ident=ident, port=conn.port,
                                      protocol=conn.protocol, destination=conn.destination)
            got = {(f"{r.origin.namespace}/{r.origin.name}", r.origin.index) for r in model.allowed_by}
            want = {(p.key, i) for p, i in side.allowed_by}
            if side.isolated != bool(selecting) or got != want:
                out.append((src, dst, port, proto, ptype, got, want))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(), st.booleans())
def test_compiled_networkpolicies_decide_as_the_engine(scenario: tuple[list[Any], list[Any]], as_yaml: bool) -> None:
    docs, conns = scenario
    assert mismatches(_state(docs, as_yaml), conns, networkpolicy.compile_policy) == []


def _without_implicit_namespace(pol: NetworkPolicy) -> CompiledPolicy:
    """A planted bug: a podSelector read without the policy's namespace."""
    compiled = networkpolicy.compile_policy(pol)
    rules = tuple(replace(r, peer=replace(r.peer, selectors=tuple(
        Selector(tuple(q for q in s.reqs if q.key != NS_KEY)) for s in r.peer.selectors)))
        if r.peer.kind is PeerKind.ENDPOINTS else r for r in compiled.rules)
    return replace(compiled, rules=rules)


def test_a_planted_bug_is_caught() -> None:
    state = state_with(netpol("backend", "{podSelector: {matchLabels: {app: api}}, ingress: [{from: "
                                         "[{podSelector: {matchLabels: {app: web}}}]}]}"))
    conns = [("frontend/web", "backend/api", 8080, "TCP")]
    assert mismatches(state, conns, networkpolicy.compile_policy) == []
    assert mismatches(state, conns, _without_implicit_namespace) != []
