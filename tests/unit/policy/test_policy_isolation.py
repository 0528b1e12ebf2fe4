"""Which pods a policy isolates, in which direction, and how policies combine.

Each verdict is summarised as "in:X eg:Y" where X and Y are ``open`` (not
isolated), ``allow`` (isolated, some rule admits) or ``deny`` (isolated,
nothing admits): ingress is the destination's side, egress the source's.
"""

from __future__ import annotations

import pytest

from drop_explainer.policy.engine import DirectionVerdict, Verdict
from tests.unit.policy.world import ask, netpol, state_with


def _side(d: DirectionVerdict) -> str:
    if not d.isolated:
        assert d.allowed
        assert not d.policies
        return "open"
    return "allow" if d.allowed else "deny"


def summary(v: Verdict) -> str:
    return f"in:{_side(v.ingress)} eg:{_side(v.egress)}"


API_ONLY = netpol("backend", "{podSelector: {matchLabels: {app: api}}}")
ALL_FRONTEND = "{podSelector: {}%s}"


@pytest.mark.parametrize(
    ("policies", "source", "destination", "port", "expected"),
    [
        pytest.param([API_ONLY], "frontend/web", "backend/api", 8080, "in:deny eg:open", id="selected-pod-isolated"),
        pytest.param([API_ONLY], "frontend/web", "backend/db", 5432, "in:open eg:open", id="unselected-pod-open"),
        pytest.param([netpol("backend", "{podSelector: {}}")], "frontend/web", "backend/db", 5432, "in:deny eg:open",
                     id="empty-pod-selector-selects-every-pod-in-namespace"),
        pytest.param([netpol("frontend", "{podSelector: {matchLabels: {app: api}}}")], "frontend/web", "backend/api",
                     8080, "in:open eg:open", id="pod-selector-only-looks-in-the-policys-namespace"),
        pytest.param([netpol("frontend", "{podSelector: {}, policyTypes: [Ingress]}")], "frontend/web",
                     "backend/api", 8080, "in:open eg:open", id="ingress-policy-leaves-egress-open"),
        pytest.param([netpol("frontend", "{podSelector: {}, policyTypes: [Ingress]}")], "backend/api",
                     "frontend/web", 80, "in:deny eg:open", id="ingress-policy-isolates-ingress"),
        pytest.param([netpol("frontend", "{podSelector: {}, policyTypes: [Egress]}")], "frontend/web", "backend/api",
                     8080, "in:open eg:deny", id="egress-policy-isolates-egress"),
        pytest.param([netpol("frontend", "{podSelector: {}, policyTypes: [Egress]}")], "backend/api", "frontend/web",
                     80, "in:open eg:open", id="egress-policy-leaves-ingress-open"),
        pytest.param([netpol("frontend", "{podSelector: {}, policyTypes: [Ingress, Egress]}")], "frontend/web",
                     "frontend/cache", 8080, "in:deny eg:deny", id="both-types-isolate-both-ends"),
    ],
)
def test_policy_isolates_selected_pods_per_direction(
    policies: list[str], source: str, destination: str, port: int, expected: str
) -> None:
    """A pod is isolated in a direction once a policy of its namespace selects it for that direction."""
    assert summary(ask(state_with(*policies), source, destination, port)) == expected


@pytest.mark.parametrize(
    ("spec", "source", "destination", "port", "expected"),
    [
        pytest.param(ALL_FRONTEND % "", "backend/api", "frontend/web", 80, "in:deny eg:open",
                     id="no-types-no-rules-means-ingress"),
        pytest.param(ALL_FRONTEND % "", "frontend/web", "backend/api", 8080, "in:open eg:open",
                     id="no-types-no-rules-leaves-egress-open"),
        pytest.param(ALL_FRONTEND % ", egress: [{to: [{podSelector: {}}]}]", "frontend/web", "backend/api", 8080,
                     "in:open eg:deny", id="egress-rules-add-egress"),
        pytest.param(ALL_FRONTEND % ", egress: [{to: [{podSelector: {}}]}]", "frontend/web", "frontend/cache", 8080,
                     "in:deny eg:allow", id="egress-rules-keep-ingress"),
        pytest.param(ALL_FRONTEND % ", egress: []", "frontend/web", "backend/api", 8080, "in:open eg:open",
                     id="empty-egress-list-does-not-add-egress"),
        pytest.param(ALL_FRONTEND % ", policyTypes: [Ingress], egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]",
                     "frontend/web", "backend/api", 8080, "in:open eg:open",
                     id="explicit-ingress-ignores-egress-rules"),
        pytest.param(ALL_FRONTEND % ", policyTypes: [Egress], ingress: [{}]", "backend/api", "frontend/web", 80,
                     "in:open eg:open", id="explicit-egress-ignores-ingress-rules"),
        pytest.param(ALL_FRONTEND % ", policyTypes: [Egress], ingress: [{}]", "frontend/web", "backend/api", 8080,
                     "in:open eg:deny", id="explicit-egress-without-egress-rules-denies-all-egress"),
    ],
)
def test_policy_types_default_as_the_api_server_does(
    spec: str, source: str, destination: str, port: int, expected: str
) -> None:
    """Without policyTypes, Ingress always applies and Egress only when egress rules exist."""
    assert summary(ask(state_with(netpol("frontend", spec)), source, destination, port)) == expected


ALLOW_WEB = netpol("backend", "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{namespaceSelector: "
                   "{matchLabels: {team: web}}, podSelector: {matchLabels: {app: web}}}]}]}", name="allow-web")
ALLOW_TOOL = netpol("backend", "{podSelector: {matchLabels: {tier: back}}, ingress: [{from: [{namespaceSelector: "
                    "{matchLabels: {kubernetes.io/metadata.name: ops}}}]}]}", name="allow-ops")
DENY_BACKEND = netpol("backend", "{podSelector: {}}", name="deny-all")
FRONTEND_EGRESS_TO_DB = netpol("frontend", "{podSelector: {}, egress: [{to: [{namespaceSelector: {}, podSelector: "
                               "{matchLabels: {app: db}}}]}]}", name="egress-db")
BACKEND_FROM_WEB = netpol("backend", "{podSelector: {}, ingress: [{from: [{namespaceSelector: "
                          "{matchLabels: {team: web}}}]}]}", name="from-web")


WEB_TO_API = ("frontend/web", "backend/api", 8080)
WEB_TO_DB = ("frontend/web", "backend/db", 5432)
Question = tuple[str, str, int]


@pytest.mark.parametrize(
    ("policies", "question", "expected", "admitted_by"),
    [
        pytest.param([ALLOW_WEB, ALLOW_TOOL], WEB_TO_API, "in:allow eg:open", ["allow-web"], id="first-policy-admits"),
        pytest.param([ALLOW_WEB, ALLOW_TOOL], ("ops/tool", "backend/api", 8080), "in:allow eg:open", ["allow-ops"],
                     id="second-policy-admits"),
        pytest.param([ALLOW_WEB, ALLOW_TOOL], ("frontend/cache", "backend/api", 8080), "in:deny eg:open", [],
                     id="neither-admits"),
        pytest.param([DENY_BACKEND, ALLOW_WEB], WEB_TO_API, "in:allow eg:open", ["allow-web"],
                     id="deny-all-does-not-override-an-allow"),
        pytest.param([DENY_BACKEND, ALLOW_WEB], WEB_TO_DB, "in:deny eg:open", [],
                     id="deny-all-still-isolates-the-rest"),
        pytest.param([FRONTEND_EGRESS_TO_DB], WEB_TO_DB, "in:open eg:allow", ["egress-db"],
                     id="egress-allowed-ingress-open"),
        pytest.param([FRONTEND_EGRESS_TO_DB, DENY_BACKEND], WEB_TO_DB, "in:deny eg:allow", ["egress-db"],
                     id="egress-allowed-but-ingress-denied"),
        pytest.param([BACKEND_FROM_WEB, netpol("frontend", "{podSelector: {}, policyTypes: [Egress]}")], WEB_TO_DB,
                     "in:allow eg:deny", ["from-web"], id="ingress-allowed-but-egress-denied"),
        pytest.param([BACKEND_FROM_WEB, FRONTEND_EGRESS_TO_DB], WEB_TO_DB, "in:allow eg:allow",
                     ["egress-db", "from-web"], id="both-ends-allow"),
    ],
)
def test_connection_needs_the_union_of_policies_on_both_ends(
    policies: list[str], question: Question, expected: str, admitted_by: list[str]
) -> None:
    """Policies selecting a pod add up; the source's egress and the destination's ingress must both allow."""
    verdict = ask(state_with(*policies), *question)
    assert summary(verdict) == expected
    assert verdict.allowed == ("deny" not in expected)
    admitting = sorted(p.name for p, _ in (*verdict.ingress.allowed_by, *verdict.egress.allowed_by))
    assert admitting == admitted_by


def test_isolating_policies_are_listed_for_each_direction() -> None:
    """Every policy that selects the pod for a direction is reported, allowing or not."""
    verdict = ask(state_with(DENY_BACKEND, ALLOW_WEB, ALLOW_TOOL), "frontend/web", "backend/api", 8080)
    assert [p.key for p in verdict.ingress.policies] == ["backend/allow-ops", "backend/allow-web", "backend/deny-all"]
    assert [(p.key, rule) for p, rule in verdict.ingress.allowed_by] == [("backend/allow-web", 0)]
    assert verdict.egress.policies == ()


EVERYTHING_ISOLATED = [netpol(ns, "{podSelector: {}, policyTypes: [Ingress, Egress]}", name="lockdown")
                       for ns in ("frontend", "backend", "ops")]


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        pytest.param("172.18.0.11", "backend/api", "in:deny eg:open", id="node-source-not-isolated"),
        pytest.param("backend/api", "172.18.0.12", "in:open eg:deny", id="node-destination-not-isolated"),
        pytest.param("ops/agent", "backend/api", "in:deny eg:open", id="host-network-source-not-isolated"),
        pytest.param("backend/api", "ops/agent", "in:open eg:deny", id="host-network-destination-not-isolated"),
        pytest.param("203.0.113.9", "backend/api", "in:deny eg:open", id="external-source-not-isolated"),
        pytest.param("backend/api", "8.8.8.8", "in:open eg:deny", id="external-destination-not-isolated"),
        pytest.param("10.244.1.99", "backend/api", "in:deny eg:open", id="pod-network-address-not-isolated"),
        pytest.param("172.18.0.11", "203.0.113.9", "in:open eg:open", id="nothing-isolated-between-non-pods"),
    ],
)
def test_endpoints_that_are_not_pods_are_never_isolated(source: str, destination: str, expected: str) -> None:
    """Nodes, host-network pods and outside addresses are not selected even by podSelector: {}."""
    assert summary(ask(state_with(*EVERYTHING_ISOLATED), source, destination, 8080)) == expected


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(netpol("quiet", "{podSelector: {}, policyTypes: [Ingress, Egress]}"), id="namespace-without-pods"),
        pytest.param(netpol("ghost", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),
                     id="namespace-not-in-the-state"),
        pytest.param(netpol("backend", "{podSelector: {matchLabels: {app: nothing}}, policyTypes: [Ingress, Egress]}"),
                     id="pod-selector-matching-nothing"),
        pytest.param(netpol("backend", "{podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}}"),
                     id="expression-matching-nothing"),
    ],
)
def test_policies_that_select_no_pod_are_ignored(policy: str) -> None:
    """A policy that selects nothing changes no verdict and breaks nothing."""
    verdict = ask(state_with(policy), "frontend/web", "backend/api", 8080)
    assert summary(verdict) == "in:open eg:open"
    assert verdict.allowed


def test_peer_selectors_matching_nothing_admit_nothing() -> None:
    """A rule whose peers select no pod still isolates, and simply admits no one."""
    policy = netpol("backend", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: none}}}, "
                               "{podSelector: {matchLabels: {app: nothing}}}]}]}")
    assert summary(ask(state_with(policy), "frontend/web", "backend/api", 8080)) == "in:deny eg:open"
