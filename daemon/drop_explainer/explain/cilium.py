"""What the compiled policy kinds (CiliumNetworkPolicy...) add to an explanation.

The NetworkPolicy tracer (explain/tracing.py) quotes v1 rules; rules of the
other kinds are quoted here from the rule model, each with its origin
(``CiliumNetworkPolicy backend/api spec.ingress[0]``), so an answer names
the isolating or denying CNP and the clause that fails, with the identity
labels, entities and CIDRs Cilium matches (policy-kinds.md section 1.11).
"""

from __future__ import annotations

from drop_explainer.cluster.objects import PolicyType
from drop_explainer.policy import evaluating
from drop_explainer.policy.engine import Connection, DirectionVerdict, Engine, Verdict
from drop_explainer.policy.model import ModelRule

MAX_RULES = 8


def policies_of(rules: tuple[ModelRule, ...]) -> list[str]:
    """The distinct objects these rules come from, as answers name them."""
    return list(dict.fromkeys(r.origin.describe().rsplit(" ", 1)[0] for r in rules))


def direction_part(d: DirectionVerdict, direction: str, at: str) -> str | None:
    """The headline's words for a denied direction decided by compiled rules (None: v1 alone decides)."""
    if d.denied_by:
        r = d.denied_by[0]
        return (f"{direction} of {at} is denied by {r.origin.describe()} ({r.peer.text}); a deny rule wins over "
                "every allow, of any kind")
    if not d.selecting:
        return None
    names = ", ".join([*(p.key for p in d.policies), *policies_of(d.selecting)])
    return f"{direction} of {at} is isolated by {names} and no rule admits it"


def notes(engine: Engine, conn: Connection, verdict: Verdict) -> tuple[str, ...]:
    """Per denied direction, every selecting compiled rule and its failing clause; then what is not decided."""
    out: list[str] = []
    for ptype, d in ((PolicyType.EGRESS, verdict.egress), (PolicyType.INGRESS, verdict.ingress)):
        subject, other = (conn.source, conn.destination) if ptype is PolicyType.EGRESS else \
            (conn.destination, conn.source)
        if not d.allowed and d.selecting and not d.denied_by:
            node = subject.pod.node_name if subject.pod is not None else None
            ident, _ = evaluating.peer_identity(engine.state, other, node)
            for rule in d.selecting[:MAX_RULES]:
                if rule.action.value != "Allow":
                    continue
                fails = evaluating.rule_failures(engine.state, rule, other, other_ident=ident, port=conn.port,
                                                 protocol=conn.protocol, destination=conn.destination)
                if rule.peer.text == "{}":
                    fails = ("an empty rule {} allows nothing in a CiliumNetworkPolicy; it only selects the pod "
                             "for default deny",)
                out.append(f"{rule.origin.describe()}: " + "; ".join(fails or ("matches",)))
        out.extend(f"{ptype.value.lower()}: {u}" for u in d.unsure)
        out.extend(d.l7)
    return tuple(out)


def deny_notes(verdict: Verdict) -> tuple[str, ...]:
    """A deny rule decides: no allow of any kind can override it, so no allow is offered as a fix (section 1.9)."""
    out = []
    for name, d in (("egress", verdict.egress), ("ingress", verdict.ingress)):
        for r in d.denied_by:
            out.append(f"{name} denied by {r.origin.describe()} ({r.peer.text}"
                       f"{', ports ' + ', '.join(p.describe() for p in r.ports) if r.ports else ''}): no allow rule "
                       "of any kind can override a deny; narrow or remove this deny rule instead")
    return tuple(out)
