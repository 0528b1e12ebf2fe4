"""Policy kinds the engine does not evaluate: loaded by apiVersion and kind, kept, counted, named in answers.

The reproductions of issue 11: a state with projectcalico.org/v3 NetworkPolicy objects failed to load
("spec.podSelector is required"), and CiliumNetworkPolicy objects were ignored without a word.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from drop_explainer import cli
from drop_explainer.cluster import unevaluated
from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import explaining, rendering
from drop_explainer.explain import unevaluated as marking
from drop_explainer.policy import endpoints, queries
from drop_explainer.policy.engine import Engine

BASE: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "web"}}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops", "labels": {"team": "ops"}}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
     "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
     "status": {"phase": "Running", "podIP": "10.0.0.10"}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "shop",
                                                      "labels": {"app": "client"}},
     "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running", "podIP": "10.0.0.11"}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "ops", "labels": {"app": "probe"}},
     "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running", "podIP": "10.0.0.12"}},
]


def cnp(name: str, selector: dict[str, Any], ns: str = "shop", **more: Any) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"endpointSelector": selector, "ingress": [{"fromEntities": ["cluster"]}], **more}}


def antrea(name: str, selector: dict[str, Any], ns: str = "shop") -> dict[str, Any]:
    """An Antrea NetworkPolicy: a kind still not evaluated (CiliumNetworkPolicy now is, issue 14)."""
    return {"apiVersion": "crd.antrea.io/v1beta1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"appliedTo": [{"podSelector": selector}], "ingress": []}}


def calico(kind: str, name: str, selector: str | None, ns: str | None = "shop", **spec: Any) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
            "spec": {**({"selector": selector} if selector is not None else {}), "order": 10,
                     "ingress": [{"action": "Deny"}], **spec}}


def anp(kind: str, subject: dict[str, Any], version: str = "v1alpha1") -> dict[str, Any]:
    return {"apiVersion": f"policy.networking.k8s.io/{version}", "kind": kind, "metadata": {"name": "admin"},
            "spec": {"priority": 10, "subject": subject, "ingress": []}}


def state(*extra: dict[str, Any]) -> ClusterState:
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [*BASE, *extra]})
    objs = parse_documents("state.yaml", text)
    kept = tuple(e for o in [*BASE, *extra] if (e := unevaluated.not_evaluated(o)) is not None)
    return ClusterState.build(objs).with_not_evaluated(kept)


# --- loading ------------------------------------------------------------------------------------


def test_a_calico_v3_networkpolicy_loads_and_is_never_read_as_a_kubernetes_one(tmp_path: Path) -> None:
    """The reproduction: it has spec.selector, not spec.podSelector; the state loads and names it."""
    path = tmp_path / "state.yaml"
    path.write_text(yaml.safe_dump_all([*BASE, calico("NetworkPolicy", "deny-web", "app == 'web'"),
                                        cnp("l7", {"matchLabels": {"app": "web"}})]), encoding="utf-8")
    loaded = load_state(path)
    assert loaded.policies == {}
    assert [o.describe() for o in loaded.not_evaluated] == ["Calico NetworkPolicy shop/deny-web (order 10)"]
    assert [c.describe() for c in loaded.compiled.values()] == ["CiliumNetworkPolicy shop/l7"]  # evaluated now


def test_the_group_decides_the_kind_and_a_networkpolicy_without_apiversion_is_still_kubernetes() -> None:
    """networking.k8s.io/v1 and hand-written objects without apiVersion are NetworkPolicies; other groups are not."""
    knp = {"kind": "NetworkPolicy", "metadata": {"name": "np", "namespace": "shop"}, "spec": {"podSelector": {}}}
    objs = parse_documents("s", yaml.safe_dump_all([
        knp, {**knp, "apiVersion": "networking.k8s.io/v1", "metadata": {"name": "np2", "namespace": "shop"}},
        {**knp, "apiVersion": "example.com/v1", "metadata": {"name": "other", "namespace": "shop"}}]))
    assert sorted(o.key for o in objs) == ["shop/np", "shop/np2"]  # type: ignore[attr-defined]


def test_a_typed_crd_list_passes_its_group_to_its_items(tmp_path: Path) -> None:
    """kubectl get networkpolicies.crd.projectcalico.org -o json through the API: items without kind or group."""
    item = calico("NetworkPolicy", "default.deny", "all()")
    del item["apiVersion"], item["kind"]
    path = tmp_path / "calico.json"
    path.write_text(json.dumps({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicyList",
                                "items": [item]}), encoding="utf-8")
    loaded = load_state(path)
    assert loaded.policies == {}
    assert [(o.group, o.kind, o.name) for o in loaded.not_evaluated] == [
        ("crd.projectcalico.org", "NetworkPolicy", "default.deny")]


# --- selection, per kind -------------------------------------------------------------------------

WEB = "shop/web"
CASES = [
    pytest.param(calico("NetworkPolicy", "p", "app == 'web'"), WEB, True, id="calico-equals"),
    pytest.param(calico("NetworkPolicy", "p", "app == 'web' && !has(debug)"), WEB, True, id="calico-and-not-has"),
    pytest.param(calico("NetworkPolicy", "p", "app in {'db', 'cache'}"), WEB, False, id="calico-in-set"),
    pytest.param(calico("NetworkPolicy", "p", "app != 'web'"), WEB, False, id="calico-not-equal"),
    pytest.param(calico("NetworkPolicy", "p", None), WEB, True, id="calico-no-selector-is-all"),
    pytest.param(calico("NetworkPolicy", "p", "app == 'web' || app == 'db'"), WEB, None, id="calico-or-may"),
    pytest.param(calico("NetworkPolicy", "p", "app starts with 'w'"), "shop/client", None,
                 id="calico-unread-operator-may-select-any-pod-of-its-namespace"),
    pytest.param(calico("NetworkPolicy", "p", "app starts with 'w'"), "ops/probe", False,
                 id="calico-unread-operator-never-outside-its-namespace"),
    pytest.param(calico("GlobalNetworkPolicy", "g", "all()", ns=None, namespaceSelector="team == 'ops'"),
                 "ops/probe", True, id="calico-gnp-namespace-selector"),
    pytest.param(calico("GlobalNetworkPolicy", "g", "all()", ns=None, namespaceSelector="team == 'ops'"),
                 WEB, False, id="calico-gnp-other-namespace"),
    pytest.param(calico("GlobalNetworkPolicy", "g", "has(projectcalico.org/namespace)", ns=None), WEB, None,
                 id="calico-own-labels-may"),
    pytest.param(anp("AdminNetworkPolicy", {"namespaces": {"matchLabels": {"team": "web"}}}), WEB, True,
                 id="anp-namespaces"),
    pytest.param(anp("BaselineAdminNetworkPolicy", {"pods": {"namespaceSelector": {},
                                                             "podSelector": {"matchLabels": {"app": "db"}}}}),
                 WEB, False, id="banp-pods-no-match"),
    pytest.param(anp("ClusterNetworkPolicy", {"pods": {"namespaceSelector": {"matchLabels": {"team": "ops"}},
                                                       "podSelector": {}}}, "v1alpha2"), "ops/probe", True,
                 id="kcnp-pods"),
    pytest.param({"apiVersion": "crd.antrea.io/v1beta1", "kind": "ClusterNetworkPolicy", "metadata": {"name": "a"},
                  "spec": {"appliedTo": [{"podSelector": {"matchLabels": {"app": "probe"}}}]}}, "ops/probe", True,
                 id="acnp-podselector-is-cluster-wide"),
    pytest.param({"apiVersion": "crd.antrea.io/v1beta1", "kind": "ClusterNetworkPolicy", "metadata": {"name": "a"},
                  "spec": {"appliedTo": [{"group": "g"}]}}, WEB, None, id="acnp-group-may"),
    pytest.param({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Tier", "metadata": {"name": "t"},
                  "spec": {"priority": 100}}, WEB, False, id="antrea-tier-selects-no-pod"),
]


@pytest.mark.parametrize(("obj", "pod", "expected"), CASES)
def test_which_pods_a_policy_of_each_kind_selects(obj: dict[str, Any], pod: str, expected: bool | None) -> None:
    """True: selects; None: may select (not read exactly, taken conservatively); False: cannot select it."""
    entry = unevaluated.not_evaluated(obj)
    assert entry is not None
    st = state()
    assert marking.selects(entry, endpoints.resolve(st, pod)) is expected


def test_a_host_network_end_or_an_address_is_not_selected() -> None:
    """These kinds select pods here; a node address or the outside world is not one."""
    entry = unevaluated.not_evaluated(antrea("x", {}))
    assert entry is not None
    st = state()
    assert marking.selects(entry, endpoints.resolve(st, "192.0.2.1")) is False


# --- answers ------------------------------------------------------------------------------------


def whatif(st: ClusterState, src: str, dst: str, port: int = 8080) -> dict[str, Any]:
    return cli.whatif(Engine(st), queries.Query(src, dst, port, "TCP"), explain=True)


ANSWERS = [
    pytest.param(antrea("l4", {"matchLabels": {"app": "web"}}), "shop/client", WEB,
                 "not evaluated: Antrea NetworkPolicy shop/l4 selects the destination pod shop/web", id="antrea-dest"),
    pytest.param(calico("NetworkPolicy", "egress", "app == 'client'"), "shop/client", WEB,
                 "not evaluated: Calico NetworkPolicy shop/egress (order 10) selects the source pod shop/client",
                 id="calico-source"),
    pytest.param(calico("NetworkPolicy", "odd", "app starts with 'w'"), "shop/client", WEB,
                 "not evaluated: Calico NetworkPolicy shop/odd (order 10) may select the destination pod shop/web "
                 "(its selector is not read here: any pod of namespace shop)", id="calico-conservative"),
    pytest.param(anp("AdminNetworkPolicy", {"namespaces": {}}), "ops/probe", WEB,
                 "not evaluated: AdminNetworkPolicy admin (priority 10) selects the destination pod shop/web",
                 id="anp-cluster-wide"),
]


@pytest.mark.parametrize(("obj", "src", "dst", "said"), ANSWERS)
def test_an_allowed_verdict_on_a_selected_pod_is_never_a_silent_allowed(
        obj: dict[str, Any], src: str, dst: str, said: str) -> None:
    """No NetworkPolicy denies it, but the policy may: the headline names it, the JSON says complete: false."""
    answer = whatif(state(obj), src, dst)
    expl = answer["explanation"]
    assert answer["allowed"] is True  # what the NetworkPolicies say, kept
    assert (answer["complete"], expl["complete"]) == (False, False)
    assert not expl["headline"].startswith("ALLOWED")
    assert expl["headline"].startswith(f"NOT DECIDED {src} -> {dst} TCP/8080")
    assert said in expl["headline"]
    assert expl["notes"][0].startswith(said)
    assert expl["notes"][0].endswith("is incomplete")
    assert expl["not_evaluated"] == [unevaluated.not_evaluated(obj).describe()]  # type: ignore[union-attr]


def test_a_denied_verdict_on_a_selected_pod_says_the_policy_may_change_it() -> None:
    """An Antrea NetworkPolicy can allow what a NetworkPolicy denies: the DENIED is incomplete too."""
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "shop"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    answer = whatif(state(deny, antrea("l4", {"matchLabels": {"app": "web"}})), "shop/client", WEB)
    headline = answer["explanation"]["headline"]
    assert answer["allowed"] is False
    assert answer["complete"] is False
    assert headline.startswith("DENIED shop/client -> shop/web TCP/8080: ingress of shop/web is isolated by shop/deny")
    assert "; not evaluated: Antrea NetworkPolicy shop/l4 selects the destination pod shop/web, which may change" in \
        headline


def test_policies_that_select_neither_end_are_counted_and_the_answer_is_complete() -> None:
    """An Antrea policy on another workload cannot change this verdict: complete, with a count."""
    st = state(antrea("db", {"matchLabels": {"app": "db"}}))
    expl = explaining.explain_connection(Engine(st), queries.connection(st, queries.Query("shop/client", WEB, 8080)))
    doc = rendering.explanation_json(expl)
    assert doc["complete"] is True
    assert expl.headline.startswith("ALLOWED")
    assert "1 policy object(s) of kinds not evaluated here are in the state (NetworkPolicy); none selects " \
           "either end of this connection" in doc["notes"]


def test_a_state_without_such_policies_is_complete_and_silent() -> None:
    expl = rendering.explanation_json(explaining.explain_connection(
        Engine(state()), queries.connection(state(), queries.Query("shop/client", WEB, 8080))))
    assert (expl["complete"], expl["not_evaluated"], expl["notes"]) == (True, [], [])


def test_the_cli_state_summary_counts_them_by_kind(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    path.write_text(yaml.safe_dump_all([*BASE, calico("NetworkPolicy", "a", "all()"), antrea("b", {}), antrea("c", {}),
                                        calico("GlobalNetworkPolicy", "g", "all()", ns=None)]), encoding="utf-8")
    out = io.StringIO()
    assert cli.main(["state", "--state", str(path)], out=out) == 0
    text = out.getvalue()
    assert "4 policies of kinds not evaluated: Antrea NetworkPolicy 2, Calico GlobalNetworkPolicy 1, " \
           "Calico NetworkPolicy 1" in text
    assert "  not evaluated: Antrea NetworkPolicy shop/b" in text


def test_a_verdict_only_batch_answer_carries_complete_too() -> None:
    """whatif --batch without --explain: no explanation, and still no silent "allowed"."""
    st = state(antrea("l4", {"matchLabels": {"app": "web"}}))
    answer = cli.whatif(Engine(st), queries.Query("shop/client", WEB, 8080, "TCP"))
    assert "explanation" not in answer
    assert (answer["allowed"], answer["complete"], answer["not_evaluated"]) == (
        True, False, ["Antrea NetworkPolicy shop/l4"])
    other = cli.whatif(Engine(st), queries.Query("shop/client", "ops/probe", 8080, "TCP"))
    assert (other["complete"], other["not_evaluated"]) == (True, [])


def test_a_fix_on_an_incomplete_answer_says_what_it_was_checked_against() -> None:
    """The fix is re-checked by the engine, which does not see the CNI's own policies: the text says so."""
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "shop"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    st = state(deny, calico("NetworkPolicy", "egress", "app == 'client'"))
    expl = explaining.explain_connection(Engine(st), queries.connection(st, queries.Query("shop/client", WEB, 8080)))
    assert expl.fixes
    assert expl.fixes[0].verified
    assert "Fix (checked against Kubernetes NetworkPolicy only: the engine allows the connection with this change, " \
           "but the policies not evaluated, named above, may still drop it)" in rendering.explanation_text(expl)
