"""Fix objects are printed as YAML that kubectl reads back to exactly the same object."""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.objects import NetworkPolicy, PolicyPort, PolicyType, Rule
from drop_explainer.explain.manifests import json_patch, policy_json, to_yaml

_text = st.text(alphabet=string.ascii_letters + string.digits + " -_./:#'\"{}[],&*!|>%@`~", max_size=12)
_scalars = st.one_of(_text, st.integers(-5, 70000), st.booleans(), st.sampled_from(["true", "no", "null", "8080",
                                                                                     "1e3", "0x1f", "", "~"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(_text, inner, max_size=3)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_text, _values, max_size=4))
def test_yaml_round_trips_any_nested_document(doc: dict[str, object]) -> None:
    """Strings that look like numbers, booleans or null stay strings; nesting and empties survive."""
    assert yaml.safe_load(to_yaml(doc)) == (doc or None)


def test_policy_yaml_parses_back_to_the_same_policy() -> None:
    """A NetworkPolicy printed by a fix is the policy our parser reads from it."""
    source = """
kind: NetworkPolicy
metadata: {name: p, namespace: ns}
spec:
  podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: ["true", "8080"]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: http}, {port: 80, endPort: 90}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {"on": "yes"}}, podSelector: {}}]
    ports: [{protocol: UDP, port: 53}]
"""
    (policy,) = parse_documents("in", source)
    (again,) = parse_documents("out", to_yaml(policy_json(policy)))  # type: ignore[arg-type]
    assert again == policy


_PATCH_BASE = """
kind: NetworkPolicy
metadata: {name: p, namespace: n, labels: {team: a}, annotations: {note: keep}}
spec:
  podSelector: {}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {}}], ports: [{port: 80}]}]
"""


@pytest.mark.parametrize(("edit", "ops"), [
    pytest.param(lambda p: replace(p, ingress=(*p.ingress, Rule((), (PolicyPort("TCP", 8080),)))),
                 [{"op": "add", "path": "/spec/ingress/-", "value": {"ports": [{"protocol": "TCP", "port": 8080}]}}],
                 id="rule-appended"),
    pytest.param(lambda p: replace(p, ingress=(replace(p.ingress[0], ports=(*p.ingress[0].ports,
                                                                             PolicyPort("UDP", 53))),)),
                 [{"op": "add", "path": "/spec/ingress/0/ports/-", "value": {"protocol": "UDP", "port": 53}}],
                 id="port-appended"),
    pytest.param(lambda p: replace(p, egress=(Rule(),)),
                 [{"op": "add", "path": "/spec/egress", "value": [{}]}], id="first-egress-rule-creates-the-list"),
    pytest.param(lambda p: replace(p, policy_types=p.policy_types | {PolicyType.INGRESS}),
                 [{"op": "add", "path": "/spec/policyTypes", "value": ["Egress", "Ingress"]}], id="policy-types"),
])
def test_json_patch_names_only_what_changed(edit: Callable[[NetworkPolicy], NetworkPolicy],
                                            ops: list[dict[str, object]]) -> None:
    """Appends where the live object has a list, creates it where it has none; metadata is never touched."""
    before = parse_documents("p", _PATCH_BASE)[0]
    assert isinstance(before, NetworkPolicy)
    assert json_patch(before, edit(before)) == ops
    assert policy_json(before)["metadata"] == {"name": "p", "namespace": "n", "labels": {"team": "a"},
                                               "annotations": {"note": "keep"}}
