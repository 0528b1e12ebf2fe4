"""Minimal means opens least; every edit comes as a JSON patch plus the full object, managed policies said so.

The reproduction: fixes were ranked by failing clauses, so a rule added to a
policy selecting every pod of the namespace was preferred over the same rule
in the policy selecting only the destination, though it opens more.
"""

from __future__ import annotations

import pytest

from drop_explainer.explain import manifests
from drop_explainer.explain.model import Explanation
from tests.unit.explain import test_service_fixes as svc
from tests.unit.explain import test_traps
from tests.unit.explain.test_fixes_work import json_patch

TWO_POLICIES = """
kind: NetworkPolicy
metadata: {name: all-pods, namespace: b}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {}}]}]
---
kind: NetworkPolicy
metadata: {name: server-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: helper}}}], ports: [{port: 8080}]}]
"""


def _fix_of(expl: Explanation) -> tuple[str, str]:
    assert len(expl.fixes) == 1
    return expl.fixes[0].kind, expl.fixes[0].target


def test_rule_goes_to_the_policy_that_opens_least() -> None:
    """b/all-pods selects dual and helper too (dual serves 8080): the rule goes to b/server-only."""
    expl = svc._explain(svc._state(TWO_POLICIES), "a/client", "b/server", 8080)
    assert _fix_of(expl) == ("add-rule", "networkpolicy b/server-only")
    radius = expl.fixes[0].blast_radius
    assert radius is not None
    assert radius.count == 0


def test_fewer_clauses_break_a_tie_in_what_is_opened() -> None:
    """Widening a port (one clause) beats a new rule (three) when both open the same."""
    state = svc._state("""
kind: NetworkPolicy
metadata: {name: server-only, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: a}},
                     podSelector: {matchLabels: {app: client}}}], ports: [{port: 9090}]}]
""")
    expl = svc._explain(state, "a/client", "b/server", 8080)
    assert _fix_of(expl) == ("add-port", "networkpolicy b/server-only")
    assert expl.fixes[0].patch == ({"op": "add", "path": "/spec/ingress/0/ports/-",
                                    "value": {"protocol": "TCP", "port": 8080}},)


def test_label_that_opens_more_than_a_rule_loses_to_the_rule() -> None:
    """name=a would admit every pod of a to every pod of b; a rule in b/from-a would admit client to b/dual too.

    A policy of b/server's own opens nothing else, so it wins although it writes the most clauses.
    """
    state = svc._state("""
kind: NetworkPolicy
metadata: {name: from-a, namespace: b}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {name: a}}}]}]
""", """
kind: Pod
metadata: {name: other, namespace: a, labels: {app: other}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {phase: Running, podIP: 10.1.1.6, hostIP: 192.168.0.1}
""")
    expl = svc._explain(state, "a/client", "b/server", 8080)
    assert "namespace-label-missing" in [t.id for t in expl.traps]
    assert _fix_of(expl) == ("new-policy", "networkpolicy b/allow-server-ingress-from-client-8080")
    radius = expl.fixes[0].blast_radius
    assert radius is not None
    assert radius.count == 0


def test_policy_types_fix_is_not_offered_when_it_would_isolate_open_pods() -> None:
    """Adding Ingress to a policy that also selects b/helper would deny helper's ingress: a rule is offered."""
    state = svc._state(test_traps.DENY_B.replace("podSelector: {}", "podSelector: {matchLabels: {app: server}}"), """
kind: NetworkPolicy
metadata: {name: egress-only, namespace: b}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [server, helper]}]}
  policyTypes: [Egress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: a}},
                     podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]}]
""")
    expl = svc._explain(state, "a/client", "b/server", 8080)
    assert "ingress-rules-ignored" in [t.id for t in expl.traps]
    assert [f.kind for f in expl.fixes] == ["add-rule"]
    assert expl.fixes[0].verified


MANAGED = [
    pytest.param({"labels": {"app.kubernetes.io/managed-by": "Helm"},
                  "annotations": {"meta.helm.sh/release-name": "shop"}}, "Helm (release shop)", id="helm"),
    pytest.param({"annotations": {"argocd.argoproj.io/tracking-id": "shop:networking.k8s.io/NetworkPolicy:b/x"}},
                 "Argo CD (application shop)", id="argocd"),
    pytest.param({"labels": {"kustomize.toolkit.fluxcd.io/name": "apps",
                             "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
                 "Flux (kustomize flux-system/apps)", id="flux"),
    pytest.param({"managedFields": [{"manager": "kubectl-client-side-apply"}, {"manager": "terraform-provider"}]},
                 "terraform-provider (managedFields)", id="managed-fields"),
    pytest.param({"managedFields": [{"manager": "kubectl-client-side-apply"}, {"manager": "kubectl-edit"}]},
                 None, id="kubectl-only"),
]


@pytest.mark.parametrize(("meta", "managed"), MANAGED)
def test_managed_policy_is_named_and_its_labels_kept(meta: dict[str, object], managed: str | None) -> None:
    """A managed policy: say who manages it, show the YAML for its source; labels and annotations kept."""
    import json

    extra = json.dumps({"kind": "NetworkPolicy", "metadata": {"name": "server-only", "namespace": "b",
                                                               "labels": {"team": "shop"}} | {
        k: ({"team": "shop"} | v if k == "labels" and isinstance(v, dict) else v) for k, v in meta.items()},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "helper"}}}]}]}})
    expl = svc._explain(svc._state(extra), "a/client", "b/server", 8080)
    fix = expl.fixes[0]
    assert fix.managed_by == managed
    obj = fix.objects[0]
    assert obj["metadata"]["labels"]["team"] == "shop"
    for key, value in dict(meta.get("annotations", {})).items():  # type: ignore[call-overload]
        assert obj["metadata"]["annotations"][key] == value
    if managed is None:
        assert fix.apply.startswith("kubectl patch networkpolicy server-only -n b --type=json -p ")
        assert "# or, replacing the whole object (made from the state as read" in fix.apply
    else:
        assert f"looks managed by {managed}" in fix.apply
        assert "Put this in its source:" in fix.apply
    original = manifests.policy_json(svc._state(extra).policies["b/server-only"])
    assert json_patch(original, fix.patch) == obj, "the patch and the full object describe the same change"
