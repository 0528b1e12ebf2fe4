"""CiliumNetworkPolicy objects Cilium's validation rejects, and features answered as incomplete.

A rejected object has no effect at all (policy-kinds.md section 1.1); it is
refused whole, named with the field, counted, and the rest of the state
still loads. Features not evaluated (toFQDNs section 1.4, L7 section 1.6,
host policies section 1.10) never give a silent "allowed".
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_cilium_l3l4 import API, ask, ccnp, cnp
from world import state_with

from drop_explainer import cli
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.policy.model import CompiledPolicy

REFUSED = [
    ("1.1 neither spec nor specs",
     "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: backend}\n", "spec"),
    ("1.1 a rule with no section", cnp("backend", f"{{endpointSelector: {API}}}"), "spec"),
    ("1.1 egress: [] is empty and so invalid", cnp("backend", f"{{endpointSelector: {API}, egress: []}}"), "spec"),
    ("1.1 nodeSelector in a CNP",
     cnp("backend", "{nodeSelector: {}, ingress: [{fromEntities: [cluster]}]}"), "spec.nodeSelector"),
    ("1.1 endpointSelector and nodeSelector together",
     ccnp("{nodeSelector: {}, endpointSelector: {}, ingress: [{fromEntities: [cluster]}]}"), "spec"),
    ("1.1 fromCIDR and fromCIDRSet in one rule",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromCIDR: [10.0.0.0/8], fromCIDRSet: [{{cidr: "
                    "10.0.0.0/8}]}]}"), "spec.ingress[0]"),
    ("1.1 icmps with toPorts",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{icmps: [{{fields: [{{type: 8}}]}}], "
                    "toPorts: [{ports: [{port: '80'}]}]}]}"), "spec.ingress[0]"),
    ("1.1 fromRequires has maxItems 0",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromRequires: [{{}}]}}]}}"),
     "spec.ingress[0].fromRequires"),
    ("1.4 unknown entity",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [everything]}}]}}"),
     "spec.ingress[0].fromEntities"),
    ("1.4 except outside its cidr",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromCIDRSet: [{{cidr: 10.0.0.0/8, "
                    "except: [192.168.0.0/16]}]}]}"), "spec.ingress[0].fromCIDRSet[0].except[0]"),
    ("1.4 deny rules cannot use toFQDNs",
     cnp("backend", f"{{endpointSelector: {API}, egressDeny: [{{toFQDNs: [{{matchName: a.example}}]}}]}}"),
     "spec.egressDeny[0].toFQDNs"),
    ("1.5 endPort below port",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{toPorts: [{{ports: [{{port: '90', endPort: 80}}]}}]}}]}}"),
     "spec.ingress[0].toPorts[0].ports[0].endPort"),
    ("1.5 protocol outside TCP, UDP, SCTP, VRRP, IGMP, ANY",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{toPorts: [{{ports: "
                    "[{port: '80', protocol: ICMP}]}]}]}"),
     "spec.ingress[0].toPorts[0].ports[0].protocol"),
    ("1.6 DNS rules on ingress",
     cnp("backend", f"{{endpointSelector: {API}, ingress: [{{toPorts: [{{ports: [{{port: '53'}}], "
                    "rules: {dns: [{matchPattern: '*'}]}}]}]}"), "spec.ingress[0].toPorts[0].rules.dns"),
]


@pytest.mark.parametrize(("doc", "field"), [pytest.param(r[1], r[2], id=r[0]) for r in REFUSED])
def test_an_invalid_object_is_refused_named_and_counted_not_fatal(doc: str, field: str) -> None:
    good = cnp("backend", f"{{endpointSelector: {API}, ingress: [{{}}]}}", name="good")
    state = state_with(doc, good)
    assert [r.field for r in state.refused] == [field]
    assert [c.name for c in state.compiled.values()] == ["good"]  # the rest of the state still loads
    assert ask(state, "frontend/web", "backend/api", 8080).allowed is False  # the good one applies


def test_a_refused_object_has_no_effect_at_all() -> None:
    """Section 1.1: invalid means no effect, not partial: its valid rule does not isolate the pod either."""
    doc = ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: backend}\n"
           f"specs: [{{endpointSelector: {API}, ingress: [{{}}]}}, {{endpointSelector: {API}}}]\n")
    state = state_with(doc)
    assert [r.field for r in state.refused] == ["specs[1]"]
    assert ask(state, "frontend/web", "backend/api", 8080).allowed is True


def test_specs_rules_are_added_together() -> None:
    """Section 1.1: all rules of spec and specs count."""
    doc = ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: backend}\n"
           f"spec: {{endpointSelector: {API}, ingress: [{{fromEntities: [world]}}]}}\n"
           f"specs: [{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{matchLabels: {{app: db}}}}]}}]}}]\n")
    state = state_with(doc)
    assert ask(state, "backend/db", "backend/api", 8080).allowed is True
    assert ask(state, "203.0.113.5", "backend/api", 8080).allowed is True
    assert ask(state, "frontend/web", "backend/api", 8080).allowed is False


def test_v2alpha1_is_read_and_other_versions_refused() -> None:
    alpha = cnp("backend", f"{{endpointSelector: {API}, ingress: [{{}}]}}")
    alpha = alpha.replace("cilium.io/v2", "cilium.io/v2alpha1")
    assert ask(state_with(alpha), "frontend/web", "backend/api", 8080).allowed is False
    beta = alpha.replace("v2alpha1", "v3")
    assert [r.field for r in state_with(beta).refused] == ["apiVersion"]


# --- never a silent "allowed" ---------------------------------------------------------------------


def test_to_fqdns_is_undecided_where_it_could_allow() -> None:
    """Section 1.4: the IPs of a toFQDNs rule come from DNS answers; a drop to world is not certain."""
    doc = cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toFQDNs: [{matchName: "
                          "api.example.com}], toPorts: [{ports: [{port: '443'}]}]}]}")
    verdict = ask(state_with(doc), "frontend/web", "198.51.100.7", 443)
    assert verdict.allowed is False
    assert any("depends on DNS answers" in u for u in verdict.unsure)
    other_port = ask(state_with(doc), "frontend/web", "198.51.100.7", 80)
    assert other_port.allowed is False
    assert not other_port.unsure  # no FQDN rule on port 80: the drop is certain


def test_an_l7_rule_is_allowed_at_l3_l4_then_subject_to_it() -> None:
    """Section 1.6: the L3/L4 part admits; the L7 rule is named, not evaluated."""
    doc = cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [cluster], toPorts: [{{ports: "
                         "[{port: '8080', protocol: TCP}], rules: {http: [{method: GET}]}}]}]}")
    verdict = ask(state_with(doc), "frontend/web", "backend/api", 8080)
    assert verdict.allowed is True
    assert verdict.ingress.l7
    assert "then subject to L7 rule spec.ingress[0].toPorts[0].rules (http)" in verdict.ingress.l7[0]


def test_an_l4_only_allow_voids_the_l7_part() -> None:
    """Section 1.6: with an L4-only allow of the same peer and port the L7 part has no effect."""
    doc = cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [cluster], toPorts: [{{ports: "
                         "[{port: '8080', protocol: TCP}], rules: {http: [{method: GET}]}}]}, "
                         "{fromEntities: [cluster]}]}")
    verdict = ask(state_with(doc), "frontend/web", "backend/api", 8080)
    assert verdict.allowed is True
    assert not verdict.ingress.l7


def test_a_host_policy_selecting_the_node_is_said_not_evaluated() -> None:
    """Section 1.10: nodeSelector rules police the host with the host firewall; not evaluated here."""
    doc = ccnp("{nodeSelector: {}, ingress: [{fromEntities: [cluster]}]}")
    state = state_with(doc)
    assert not state.refused
    verdict = ask(state, "frontend/web", "node/node-1", 22)
    assert any("host firewall policy" in u for u in verdict.unsure)
    assert ask(state, "frontend/web", "backend/api", 8080).unsure == ()  # pods are not its subject


def test_local_host_exemption_and_allow_localhost_policy() -> None:
    """Section 5.1: the local node reaches a pod in ingress default deny unless allow-localhost=policy."""
    doc = cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, ingress: [{}]}")
    state = state_with(doc)
    assert ask(state, "node/node-1", "frontend/web", 80).allowed is True
    assert ask(state, "node/node-1", "frontend/web", 80, cni="cilium,allow-localhost=policy").allowed is False
    assert ask(state, "node/node-2", "frontend/web", 80).allowed is False  # remote-node is not exempt
    with_host = state_with(cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, "
                                           "ingress: [{fromEntities: [host]}]}"))
    assert ask(with_host, "node/node-1", "frontend/web", 80, cni="cilium,allow-localhost=policy").allowed is True


def test_a_deny_covering_the_host_wins_over_the_local_host_exemption() -> None:
    """Section 5.1 (inference from deny precedence, 1.9)."""
    doc = cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, ingress: [{}], "
                          "ingressDeny: [{fromEntities: [host]}]}")
    assert ask(state_with(doc), "node/node-1", "frontend/web", 80).allowed is False


def test_the_public_path_without_a_profile_reads_cnps_too() -> None:
    """The path other tests use: Engine(state) with no profile."""
    from drop_explainer.policy import queries
    from drop_explainer.policy.engine import Engine

    state = state_with(cnp("backend", f"{{endpointSelector: {API}, ingress: [{{}}]}}"))
    conn = queries.connection(state, queries.Query("frontend/web", "backend/api", 8080, "TCP"))
    assert Engine(state).evaluate(conn).allowed is False


def test_the_cli_state_summary_counts_evaluated_and_refused_cilium_policies(tmp_path: Path) -> None:
    """Refused objects are counted and named with the field (section 1.1), never fatal."""
    good = cnp("backend", f"{{endpointSelector: {API}, ingress: [{{}}]}}", name="good")
    bad = cnp("backend", f"{{endpointSelector: {API}, egress: []}}", name="bad")
    (tmp_path / "state.yaml").write_text("---\n".join([good, bad, ccnp("{endpointSelector: {}, ingress: [{}]}")]),
                                         encoding="utf-8")
    out = io.StringIO()
    assert cli.main(["state", "--state", str(tmp_path / "state.yaml")], out=out) == 0
    text = out.getvalue()
    assert ("2 policies of other kinds evaluated: CiliumClusterwideNetworkPolicy 1, CiliumNetworkPolicy 1; "
            "1 refused as invalid") in text
    assert ("  refused: CiliumNetworkPolicy backend/bad: field spec: rule must have at least one of Ingress, "
            "IngressDeny, Egress, EgressDeny") in text


def test_the_shipped_cilium_network_policy_compiles_without_refusal() -> None:
    """deploy/components/cilium-apiserver-egress: our own CNP passes our reading of Cilium's validation."""
    path = Path(__file__).resolve().parents[3] / "deploy/components/cilium-apiserver-egress/ciliumnetworkpolicy.yaml"
    objs = parse_documents(str(path), path.read_text(encoding="utf-8"))
    assert objs
    assert all(isinstance(o, CompiledPolicy) for o in objs), objs
