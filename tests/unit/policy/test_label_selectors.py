"""Label selectors: matchLabels and the four matchExpressions operators.

Selectors are read from a NetworkPolicy's podSelector by the real parser, so
the YAML in each case is exactly what a user would write.
"""

from __future__ import annotations

import pytest

from drop_explainer.cluster import objects as o
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.policy import selectors
from tests.unit.policy.world import ask, netpol, state_with


def _selector(yaml_selector: str) -> o.LabelSelector:
    (policy,) = parse_documents("selector.yaml", netpol("default", f"{{podSelector: {yaml_selector}}}"))
    assert isinstance(policy, o.NetworkPolicy)
    return policy.pod_selector


IN_WEB_DB = "{matchExpressions: [{key: app, operator: In, values: [web, db]}]}"
NOT_IN_WEB = "{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}"
EXISTS = "{matchExpressions: [{key: app, operator: Exists}]}"
NOT_EXISTS = "{matchExpressions: [{key: app, operator: DoesNotExist}]}"
BACK_NOT_DB = "{matchLabels: {tier: back}, matchExpressions: [{key: app, operator: NotIn, values: [db]}]}"
IN_AND_NOT_IN = ("{matchExpressions: [{key: app, operator: In, values: [a, b]}, "
                 "{key: app, operator: NotIn, values: [b]}]}")


@pytest.mark.parametrize(
    ("selector", "labels", "matched"),
    [
        pytest.param("{}", {}, True, id="empty-matches-no-labels"),
        pytest.param("{}", {"app": "web"}, True, id="empty-matches-anything"),
        pytest.param("{matchLabels: {app: web}}", {"app": "web", "tier": "front"}, True, id="labels-subset"),
        pytest.param("{matchLabels: {app: web}}", {"app": "db"}, False, id="labels-other-value"),
        pytest.param("{matchLabels: {app: web}}", {}, False, id="labels-missing-key"),
        pytest.param("{matchLabels: {app: web, tier: front}}", {"app": "web"}, False, id="labels-all-must-hold"),
        pytest.param(IN_WEB_DB, {"app": "db"}, True, id="in-one-of-values"),
        pytest.param(IN_WEB_DB, {"app": "cache"}, False, id="in-other-value"),
        pytest.param(IN_WEB_DB, {}, False, id="in-missing-key"),
        pytest.param(NOT_IN_WEB, {"app": "db"}, True, id="notin-other-value"),
        pytest.param(NOT_IN_WEB, {"app": "web"}, False, id="notin-listed-value"),
        pytest.param(NOT_IN_WEB, {"tier": "x"}, True, id="notin-matches-objects-lacking-the-key"),
        pytest.param(EXISTS, {"app": ""}, True, id="exists-any-value"),
        pytest.param(EXISTS, {"tier": "x"}, False, id="exists-missing-key"),
        pytest.param(NOT_EXISTS, {"tier": "x"}, True, id="doesnotexist-missing-key"),
        pytest.param(NOT_EXISTS, {"app": "web"}, False, id="doesnotexist-present-key"),
        pytest.param(BACK_NOT_DB, {"tier": "back", "app": "api"}, True, id="labels-and-expressions-both-hold"),
        pytest.param(BACK_NOT_DB, {"tier": "back", "app": "db"}, False, id="labels-hold-expression-fails"),
        pytest.param(BACK_NOT_DB, {"tier": "front", "app": "api"}, False, id="expression-holds-labels-fail"),
        pytest.param(BACK_NOT_DB, {"tier": "back"}, True, id="notin-in-combination-without-key"),
        pytest.param(IN_AND_NOT_IN, {"app": "a"}, True, id="two-expressions-same-key-hold"),
        pytest.param(IN_AND_NOT_IN, {"app": "b"}, False, id="two-expressions-same-key-conflict"),
    ],
)
def test_selector_matches_labels_as_kubernetes_does(selector: str, labels: dict[str, str], matched: bool) -> None:
    """Every requirement must hold; NotIn holds for objects without the key; unmet agrees with matches."""
    sel = _selector(selector)
    assert selectors.matches(sel, labels) is matched
    assert (not selectors.unmet(sel, labels)) is matched


@pytest.mark.parametrize(
    ("selector", "isolated"),
    [
        pytest.param(NOT_IN_WEB.replace("app", "tier").replace("web", "back"), ["backend/dual"], id="notin-no-key"),
        pytest.param("{matchExpressions: [{key: tier, operator: Exists}]}", ["backend/api", "backend/db"],
                     id="exists"),
        pytest.param("{matchExpressions: [{key: tier, operator: DoesNotExist}]}", ["backend/dual"],
                     id="doesnotexist"),
        pytest.param("{matchExpressions: [{key: app, operator: In, values: [api, dual]}]}",
                     ["backend/api", "backend/dual"], id="in"),
    ],
)
def test_policy_pod_selector_isolates_exactly_the_pods_it_matches(selector: str, isolated: list[str]) -> None:
    """The same selectors, seen through which backend pods end up isolated."""
    state = state_with(netpol("backend", f"{{podSelector: {selector}}}"))
    found = [pod for pod in ("backend/api", "backend/db", "backend/dual")
             if ask(state, "frontend/web", pod, 8080).ingress.isolated]
    assert found == isolated


@pytest.mark.parametrize(
    ("selector", "described"),
    [
        pytest.param("{}", "{} (everything)", id="empty"),
        pytest.param(BACK_NOT_DB, "tier=back,app notin (db)", id="labels-then-expressions"),
        pytest.param(IN_WEB_DB, "app in (web,db)", id="in"),
        pytest.param(EXISTS, "app", id="exists"),
        pytest.param(NOT_EXISTS, "!app", id="doesnotexist"),
    ],
)
def test_selector_is_described_in_kubectl_syntax(selector: str, described: str) -> None:
    """Explanations quote selectors the way kubectl -l would take them."""
    assert selectors.describe(_selector(selector)) == described
