"""An answer about a pod that a policy of a kind we do not evaluate selects is incomplete, and says so.

A CiliumNetworkPolicy, a Calico GlobalNetworkPolicy or an AdminNetworkPolicy
acts on the pods it selects, on their ingress and on their egress: it can
drop what the NetworkPolicies allow or allow what they deny. So when such a
policy selects (or, read conservatively, may select) either end of the
connection, the verdict of the NetworkPolicies alone is not the answer:
the headline names the policy ("not evaluated: CiliumNetworkPolicy shop/x
selects the destination pod shop/web-..."), never a bare "ALLOWED", and the
JSON says ``"complete": false``. Policies that select neither end cannot
change the verdict and are only counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from drop_explainer.cluster.unevaluated import NotEvaluated
from drop_explainer.explain.model import Explanation
from drop_explainer.policy import selectors
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import Connection

MAX_NAMED = 5

_HINTS = {
    "cilium.io": "Cilium adds the allows of its policies to those of NetworkPolicy, and any deny rule wins",
    "projectcalico.org": "Calico applies its tiers in order, Kubernetes NetworkPolicies in the default tier",
    "crd.projectcalico.org": "Calico applies its tiers in order, Kubernetes NetworkPolicies in the default tier",
    "policy.networking.k8s.io": "AdminNetworkPolicy is applied before NetworkPolicy and "
                                "BaselineAdminNetworkPolicy after it",
    "crd.antrea.io": "Antrea applies them before (tiers) or after (baseline) Kubernetes NetworkPolicy",
}


@dataclass(frozen=True, slots=True)
class Selection:
    policy: NotEvaluated
    end: str
    """"the source pod ns/a" or "the destination pod ns/b"."""
    exact: bool

    def sentence(self) -> str:
        verb = "selects" if self.exact else "may select"
        why = "" if self.exact else f" (its selector is not read here: {_scope(self.policy)})"
        return f"{self.policy.describe()} {verb} {self.end}{why}"


def _scope(p: NotEvaluated) -> str:
    return f"any pod of namespace {p.namespace}" if p.namespace else "any pod of the cluster"


def selects(policy: NotEvaluated, subject: Subject) -> bool | None:
    """True if the policy selects the pod, None if it may (not read exactly), False if it cannot."""
    pod = subject.pod
    if pod is None or not subject.is_pod:
        return False  # host-network pods, nodes, outside addresses: not pods these kinds select here
    if policy.namespace is not None and policy.namespace != pod.namespace:
        return False
    if policy.choices is None:
        return None
    ns_labels = subject.namespace_labels or {"kubernetes.io/metadata.name": pod.namespace}
    for choice in policy.choices:
        if choice.namespace is not None and choice.namespace != pod.namespace:
            continue
        if choice.namespaces is not None and not selectors.matches(choice.namespaces, ns_labels):
            continue
        if selectors.matches(choice.pods, pod.labels):
            return True
    return False


def selections(objects: Sequence[NotEvaluated], source: Subject, destination: Subject) -> list[Selection]:
    out = []
    for policy in objects:
        for subject, role in ((destination, "destination"), (source, "source")):
            found = selects(policy, subject)
            if found is not False:
                assert subject.pod is not None
                out.append(Selection(policy, f"the {role} pod {subject.pod.key}", found is True))
                break
    return out


def verdict_fields(objects: Sequence[NotEvaluated], connection: Connection) -> dict[str, object]:
    """``complete`` and ``not_evaluated`` for a verdict-only answer (what-if batches without explanations)."""
    found = selections(objects, connection.source, connection.destination)
    return {"complete": not found, "not_evaluated": [s.policy.describe() for s in found]}


def counts(objects: Sequence[NotEvaluated]) -> list[tuple[str, int]]:
    """(kind as named in answers, how many), most first: the state summary and the metric read it."""
    by_kind: dict[str, int] = {}
    for p in objects:
        by_kind[p.kind_name] = by_kind.get(p.kind_name, 0) + 1
    return sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))


def mark(expl: Explanation, objects: Sequence[NotEvaluated]) -> Explanation:
    """The explanation named incomplete where a not-evaluated policy selects either end (a no-op otherwise)."""
    if not objects or expl.not_evaluated:
        return expl
    c = expl.connection
    found = selections(objects, c.source, c.destination)
    if not found:
        note = (f"{len(objects)} policy object(s) of kinds not evaluated here are in the state "
                f"({', '.join(sorted({p.kind for p in objects}))}); none selects either end of this connection")
        return expl if note in expl.notes else replace(expl, notes=(*expl.notes, note))
    named = "; ".join(s.sentence() for s in found[:MAX_NAMED])
    more = f"; and {len(found) - MAX_NAMED} more" if len(found) > MAX_NAMED else ""
    hints = "; ".join(dict.fromkeys(_HINTS[s.policy.group] for s in found if s.policy.group in _HINTS))
    note = (f"not evaluated: {named}{more}. These policy kinds are loaded but not evaluated by the engine"
            f"{' (' + hints + ')' if hints else ''}, so this answer covers Kubernetes NetworkPolicy only and "
            "is incomplete")
    headline = expl.headline
    if headline.startswith("ALLOWED "):
        headline = "NOT DECIDED " + headline.removeprefix("ALLOWED ")
    first = found[0].sentence()
    headline += f"; not evaluated: {first}{' (and more)' if len(found) > 1 else ''}, which may change this verdict"
    names = tuple(s.policy.describe() for s in found)
    return replace(expl, headline=headline, notes=(note, *expl.notes), not_evaluated=names)
