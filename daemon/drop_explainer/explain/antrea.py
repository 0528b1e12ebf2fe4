"""Antrea's side of an explanation: its own policy attribution, cross-checked with the engine.

Antrea names the policy that decided each direction of a record
(normalise/antrea.py). For a Kubernetes NetworkPolicy isolation drop it
names none (calico.md section 6: "we cannot get Namespace/name"), and the
engine's answer, compared by the generic agreement, stands. For an
Antrea-native rule (AntreaNetworkPolicy, AntreaClusterNetworkPolicy) or a
Kubernetes ClusterNetworkPolicy the engine does not evaluate the kind: the
answer names Antrea's policy and rule, says "not evaluated", and offers no
fix (none could be checked by re-evaluation).
"""

from __future__ import annotations

from dataclasses import replace

from drop_explainer.explain.model import Agreement, Explanation
from drop_explainer.flows.model import DropKind, PolicyHit, Verdict

_DENIES = frozenset({"deny", "reject"})


def describe(hit: PolicyHit) -> str:
    ref = f"{hit.namespace}/{hit.name}" if hit.namespace else hit.name
    rule = f" rule {hit.trigger}" if hit.trigger else ""
    return f"{hit.kind} {ref}{rule}"


def with_attribution(expl: Explanation) -> Explanation:
    """Name Antrea's deciding policy where it is a kind the engine does not evaluate (a no-op otherwise)."""
    flow = expl.flow
    if flow is None or flow.origin != "antrea" or flow.verdict is not Verdict.DROPPED:
        return expl
    if flow.drop_kind is not DropKind.POLICY_DENY:
        return expl
    hit = next((h for h in flow.attribution if h.action in _DENIES), None)
    if hit is None:
        return expl
    c = expl.connection
    action = "rejects" if hit.action == "reject" else "drops"
    ends = [s.pod.key if s.pod is not None and s.is_pod else s.describe() for s in (c.source, c.destination)]
    who = f"{ends[0]} -> {ends[1]} {c.protocol}/{c.port}"
    headline = (f"DROPPED {who}: Antrea's {describe(hit)} {action} it; {hit.kind} is not evaluated here, "
                "so the rule-level reason is not available")
    causes: tuple[str, ...] = (
        f"Antrea attributes the drop to {describe(hit)}, a policy kind the engine does not evaluate",)
    if not expl.verdict.allowed:
        causes += ("the Kubernetes NetworkPolicies in the state also deny it",)
    return replace(expl, headline=headline, agreement=Agreement(False, causes), fixes=())
