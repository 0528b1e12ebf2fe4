"""Answers about connections CiliumNetworkPolicies decide name the CNP, the rule and the failing clause.

policy-kinds.md section 1.11 step 6: Hubble names no policy for a default-deny drop (133), so the explainer
lists the selecting rules itself; section 1.9: a deny rule wins over every allow; section 1.4: toFQDNs is not
decidable from the state, so such an answer is incomplete, never a confident one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "policy"))

from world import state_with

from drop_explainer import cli
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine


def cnp(namespace: str, spec: str, name: str = "c") -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}"
            f"\nspec: {spec}\n")


def whatif(docs: list[str], src: str, dst: str, port: int, *, explain: bool = True) -> dict[str, Any]:
    return cli.whatif(Engine(state_with(*docs)), queries.Query(src, dst, port, "TCP"), explain=explain)


def test_a_default_deny_drop_names_the_cnp_and_each_failing_clause() -> None:
    answer = whatif([cnp("backend", "{endpointSelector: {matchLabels: {app: api}}, ingress: [{fromEntities: [world]}]}",
                         name="api-ingress")], "frontend/web", "backend/api", 8080)
    expl = answer["explanation"]
    assert answer["allowed"] is False
    assert answer["complete"] is True
    assert expl["headline"] == ("DENIED frontend/web -> backend/api TCP/8080: ingress of backend/api is isolated by "
                                "CiliumNetworkPolicy backend/api-ingress and no rule admits it")
    assert any(n.startswith("CiliumNetworkPolicy backend/api-ingress spec.ingress[0]: fromEntities: [world] does not "
                            "match pod frontend/web (identity {k8s:app=web,") for n in expl["notes"])
    assert answer["ingress"]["model"]["selecting"] == ["CiliumNetworkPolicy backend/api-ingress spec.ingress[0]"]


def test_an_empty_rule_is_said_to_allow_nothing() -> None:
    """Section 1.7: `ingress: [{}]` in a CNP selects for default deny and allows nothing."""
    answer = whatif([cnp("backend", "{endpointSelector: {matchLabels: {app: api}}, ingress: [{}]}")],
                    "frontend/web", "backend/api", 8080)
    assert any("an empty rule {} allows nothing in a CiliumNetworkPolicy" in n for n in answer["explanation"]["notes"])


def test_a_deny_drop_names_the_deny_rule() -> None:
    docs = [cnp("backend", "{endpointSelector: {matchLabels: {app: api}}, ingress: [{fromEntities: [all]}], "
                           "ingressDeny: [{fromEntities: [cluster], toPorts: [{ports: [{port: '8080'}]}]}]}")]
    answer = whatif(docs, "frontend/web", "backend/api", 8080)
    assert answer["explanation"]["headline"] == (
        "DENIED frontend/web -> backend/api TCP/8080: ingress of backend/api is denied by CiliumNetworkPolicy "
        "backend/c spec.ingressDeny[0] (fromEntities: [cluster]); a deny rule wins over every allow, of any kind")
    assert answer["ingress"]["model"]["denied_by"] == ["CiliumNetworkPolicy backend/c spec.ingressDeny[0]"]
    assert whatif(docs, "frontend/web", "backend/api", 9090)["allowed"] is True


def test_an_allowed_answer_names_the_admitting_cnp() -> None:
    answer = whatif([cnp("backend", "{endpointSelector: {matchLabels: {app: api}}, ingress: [{fromEntities: "
                                    "[cluster]}]}")], "frontend/web", "backend/api", 8080)
    assert answer["explanation"]["headline"].startswith("ALLOWED frontend/web -> backend/api TCP/8080: the policies "
                                                        "in the state allow it (CiliumNetworkPolicy backend/c")


def test_a_to_fqdns_drop_is_not_decided_in_both_answer_forms() -> None:
    docs = [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toFQDNs: [{matchName: "
                            "api.example.com}]}]}")]
    for explain in (True, False):
        answer = whatif(docs, "frontend/web", "198.51.100.7", 443, explain=explain)
        assert answer["complete"] is False
        assert any("toFQDNs [api.example.com]: depends on DNS answers" in n for n in answer["not_evaluated"])
    headline = whatif(docs, "frontend/web", "198.51.100.7", 443)["explanation"]["headline"]
    assert "; not decided: CiliumNetworkPolicy frontend/c spec.egress[0]: toFQDNs" in headline


def test_a_deny_drop_offers_no_allow_as_a_fix() -> None:
    """Section 1.9: an allow of any kind cannot override a deny; the answer says to narrow the deny."""
    docs = [
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: backend}\n"
        "spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}\n",
        cnp("backend", "{endpointSelector: {matchLabels: {app: api}}, ingress: [{fromEntities: [world]}], "
                       "ingressDeny: [{fromEntities: [cluster]}]}")]
    expl = whatif(docs, "backend/db", "backend/api", 8080)["explanation"]
    assert not expl.get("fixes")
    assert any(n.startswith("ingress denied by CiliumNetworkPolicy backend/c spec.ingressDeny[0] (fromEntities: "
                            "[cluster]): no allow rule of any kind can override a deny") for n in expl["notes"])
