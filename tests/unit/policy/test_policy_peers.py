"""Who a rule admits: from/to peers, ipBlocks, and absent versus empty lists.

Most cases isolate backend/api for ingress with one rule whose ``from`` is the
case's peer list, then ask whether a given source may reach it on TCP 8080.
"""

from __future__ import annotations

import pytest

from tests.unit.policy.world import ask, netpol, state_with


def _api_from(peers: str) -> str:
    return netpol("backend", f"{{podSelector: {{matchLabels: {{app: api}}}}, ingress: [{{from: {peers}}}]}}")


@pytest.mark.parametrize(
    ("peers", "source", "allowed"),
    [
        pytest.param("[{podSelector: {matchLabels: {app: db}}}]", "backend/db", True, id="pod-selector-same-namespace"),
        pytest.param("[{podSelector: {matchLabels: {app: web}}}]", "frontend/web", False,
                     id="pod-selector-never-reaches-other-namespaces"),
        pytest.param("[{podSelector: {}}]", "backend/dual", True, id="empty-pod-selector-all-pods-in-namespace"),
        pytest.param("[{podSelector: {}}]", "frontend/web", False, id="empty-pod-selector-only-own-namespace"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}}]", "frontend/cache", True,
                     id="namespace-selector-all-pods-of-matching-namespace"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}}]", "backend/db", False,
                     id="namespace-selector-excludes-own-namespace-when-unmatched"),
        pytest.param("[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}}]", "ops/tool", True,
                     id="namespace-name-label-always-present"),
        pytest.param("[{namespaceSelector: {}}]", "ops/tool", True, id="empty-namespace-selector-all-namespaces"),
        pytest.param("[{namespaceSelector: {}}]", "backend/db", True, id="empty-namespace-selector-own-namespace"),
        pytest.param("[{namespaceSelector: {}, podSelector: {}}]", "frontend/web", True,
                     id="both-empty-every-pod"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {app: cache}}}]",
                     "frontend/cache", True, id="both-in-one-peer-and-both-hold"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {app: cache}}}]",
                     "frontend/web", False, id="both-in-one-peer-pod-fails"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {app: db}}}]",
                     "backend/db", False, id="both-in-one-peer-namespace-fails"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}}, {podSelector: {matchLabels: {app: db}}}]",
                     "frontend/web", True, id="two-peers-first-matches"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}}, {podSelector: {matchLabels: {app: db}}}]",
                     "backend/db", True, id="two-peers-second-matches"),
        pytest.param("[{namespaceSelector: {matchLabels: {team: web}}}, {podSelector: {matchLabels: {app: db}}}]",
                     "ops/tool", False, id="two-peers-neither-matches"),
        pytest.param("[{namespaceSelector: {}}]", "172.18.0.11", False, id="selectors-never-match-a-node"),
        pytest.param("[{namespaceSelector: {}, podSelector: {}}]", "ops/agent", False,
                     id="selectors-never-match-a-host-network-pod"),
        pytest.param("[{namespaceSelector: {}}]", "203.0.113.9", False, id="selectors-never-match-outside"),
        pytest.param("[{namespaceSelector: {}}]", "10.244.1.99", False, id="selectors-never-match-pod-cidr-address"),
        pytest.param("[]", "203.0.113.9", True, id="empty-from-list-admits-everyone"),
    ],
)
def test_peers_admit_the_pods_their_selectors_name(peers: str, source: str, allowed: bool) -> None:
    """podSelector alone stays in the policy's namespace; with namespaceSelector both must hold; peers OR."""
    verdict = ask(state_with(_api_from(peers)), source, "backend/api", 8080)
    assert verdict.ingress.isolated
    assert verdict.ingress.allowed is allowed


@pytest.mark.parametrize(
    ("block", "source", "allowed"),
    [
        pytest.param("{cidr: 203.0.113.0/24}", "203.0.113.9", True, id="v4-inside"),
        pytest.param("{cidr: 203.0.113.0/24}", "198.51.100.9", False, id="v4-outside"),
        pytest.param("{cidr: 203.0.113.0/24, except: [203.0.113.8/29]}", "203.0.113.9", False, id="v4-in-except"),
        pytest.param("{cidr: 203.0.113.0/24, except: [203.0.113.8/29]}", "203.0.113.16", True,
                     id="v4-beside-except"),
        pytest.param("{cidr: 203.0.113.9/32}", "203.0.113.9", True, id="v4-host-route"),
        pytest.param("{cidr: 0.0.0.0/0}", "2001:db8::9", False, id="v4-block-never-matches-v6"),
        pytest.param("{cidr: '::/0'}", "203.0.113.9", False, id="v6-block-never-matches-v4"),
        pytest.param("{cidr: '2001:db8::/32'}", "2001:db8::9", True, id="v6-inside"),
        pytest.param("{cidr: '2001:db8::/32', except: ['2001:db8::/64']}", "2001:db8::9", False, id="v6-in-except"),
        pytest.param("{cidr: '2001:db8::/32', except: ['2001:db8::/64']}", "2001:db8:0:1::9", True,
                     id="v6-beside-except"),
        pytest.param("{cidr: 0.0.0.0/0, except: ['::/0']}", "203.0.113.9", True, id="except-of-other-family-ignored"),
        pytest.param("{cidr: 172.18.0.0/16}", "172.18.0.11", True, id="node-address"),
        pytest.param("{cidr: 172.18.0.11/32}", "ops/agent", True, id="host-network-pod-by-node-address"),
        pytest.param("{cidr: 10.244.0.0/16}", "10.244.1.99", True, id="pod-cidr-address-without-pod"),
        pytest.param("{cidr: 10.244.1.0/24}", "frontend/web", True, id="pod-matched-by-its-address"),
        pytest.param("{cidr: 10.244.1.0/24, except: [10.244.1.8/29]}", "frontend/web", False,
                     id="pod-address-in-except"),
    ],
)
def test_ip_blocks_admit_addresses_inside_cidr_and_outside_except(block: str, source: str, allowed: bool) -> None:
    """ipBlock compares addresses only, per family, with except carving holes."""
    verdict = ask(state_with(_api_from(f"[{{ipBlock: {block}}}]")), source, "backend/api", 8080)
    assert verdict.ingress.allowed is allowed


@pytest.mark.parametrize(
    ("to", "destination", "allowed"),
    [
        pytest.param("[{ipBlock: {cidr: 8.8.8.0/24}}]", "8.8.8.8", True, id="egress-to-outside-block"),
        pytest.param("[{ipBlock: {cidr: 8.8.8.0/24}}]", "9.9.9.9", False, id="egress-outside-block"),
        pytest.param("[{namespaceSelector: {}}]", "8.8.8.8", False, id="egress-selectors-never-match-outside"),
        pytest.param("[{namespaceSelector: {}}]", "172.18.0.12", False, id="egress-selectors-never-match-a-node"),
        pytest.param("[{ipBlock: {cidr: 172.18.0.12/32}}]", "172.18.0.12", True, id="egress-to-node-by-block"),
        pytest.param("[{namespaceSelector: {}}]", "backend/api", True, id="egress-to-pod-by-selector"),
    ],
)
def test_egress_peers_match_destinations_the_same_way(to: str, destination: str, allowed: bool) -> None:
    """to peers follow from peers' rules, judged on the destination."""
    policy = netpol("frontend", f"{{podSelector: {{matchLabels: {{app: web}}}}, egress: [{{to: {to}}}]}}")
    verdict = ask(state_with(policy), "frontend/web", destination, 8080)
    assert verdict.egress.isolated
    assert verdict.egress.allowed is allowed


@pytest.mark.parametrize(
    ("policy", "source", "destination", "allowed"),
    [
        pytest.param(netpol("ops", "{podSelector: {matchLabels: {app: v6}}, ingress: [{from: [{ipBlock: "
                                   "{cidr: 'fd00:244:2::/64'}}]}]}"),
                     "backend/dual", "ops/v6", True, id="dual-stack-source-uses-its-v6-address"),
        pytest.param(netpol("ops", "{podSelector: {matchLabels: {app: v6}}, ingress: [{from: [{ipBlock: "
                                   "{cidr: 10.244.2.0/24}}]}]}"),
                     "backend/dual", "ops/v6", False, id="dual-stack-source-v4-address-not-used-toward-v6"),
        pytest.param(netpol("ops", "{podSelector: {matchLabels: {app: v6}}, egress: [{to: [{ipBlock: "
                                   "{cidr: 'fd00:244:2::/64'}}]}]}"),
                     "ops/v6", "backend/dual", True, id="dual-stack-destination-uses-its-v6-address"),
        pytest.param(netpol("frontend", "{podSelector: {matchLabels: {app: web}}, egress: [{to: [{ipBlock: "
                                        "{cidr: 10.244.2.0/24}}]}]}"),
                     "frontend/web", "backend/dual", True, id="dual-stack-destination-uses-its-v4-address"),
    ],
)
def test_dual_stack_pods_are_seen_by_the_address_of_the_peers_family(
    policy: str, source: str, destination: str, allowed: bool
) -> None:
    """A connection has one family; ipBlocks see the dual-stack pod's address of that family."""
    assert ask(state_with(policy), source, destination, 8080).allowed is allowed


@pytest.mark.parametrize(
    ("rules", "source", "allowed"),
    [
        pytest.param("ingress: [{ports: [{port: 8080}]}]", "203.0.113.9", True, id="absent-from-means-all-sources"),
        pytest.param("ingress: [{from: []}]", "172.18.0.11", True, id="empty-from-means-all-sources"),
        pytest.param("ingress: [{}]", "frontend/web", True, id="one-empty-rule-allows-all"),
        pytest.param("ingress: [{}]", "203.0.113.9", True, id="one-empty-rule-allows-outside"),
        pytest.param("ingress: []", "frontend/web", False, id="empty-rule-list-allows-none"),
        pytest.param("policyTypes: [Ingress]", "backend/db", False, id="absent-rule-list-allows-none"),
    ],
)
def test_absent_peers_mean_all_but_an_empty_rule_list_means_none(rules: str, source: str, allowed: bool) -> None:
    """from absent or [] admits everyone; ingress: [] admits no one; ingress: [{}] admits everyone."""
    verdict = ask(state_with(netpol("backend", f"{{podSelector: {{}}, {rules}}}")), source, "backend/api", 8080)
    assert verdict.ingress.isolated
    assert verdict.ingress.allowed is allowed


@pytest.mark.parametrize(
    ("rules", "destination", "allowed"),
    [
        pytest.param("egress: [{ports: [{port: 8080}]}]", "203.0.113.9", True, id="absent-to-means-all-destinations"),
        pytest.param("egress: [{to: []}]", "backend/api", True, id="empty-to-means-all-destinations"),
        pytest.param("egress: [{}]", "172.18.0.12", True, id="one-empty-rule-allows-all"),
        pytest.param("policyTypes: [Egress], egress: []", "backend/api", False, id="empty-rule-list-allows-none"),
        pytest.param("policyTypes: [Egress]", "backend/api", False, id="absent-rule-list-allows-none"),
    ],
)
def test_egress_rule_lists_follow_the_same_absent_empty_rule(rules: str, destination: str, allowed: bool) -> None:
    """The same three shapes for egress (to absent, to: [], egress: [] with Egress listed)."""
    verdict = ask(state_with(netpol("frontend", f"{{podSelector: {{}}, {rules}}}")), "frontend/web", destination, 8080)
    assert verdict.egress.isolated
    assert verdict.egress.allowed is allowed
