"""An explanation as a person reads it at 2 AM, and as a program parses it.

Text: a headline sentence, then why (policy by policy, rule by rule), then
the traps, then the fix ready to paste. JSON: the same facts with stable ids,
documented by ``schemas/explanation.schema.json``.
"""

from __future__ import annotations

from typing import Any

from drop_explainer.explain import services_view
from drop_explainer.explain.model import Explanation, Fix, PolicyTrace, RuleTrace
from drop_explainer.flows import codec
from drop_explainer.policy.queries import direction_json, policy_ref, subject_json

SCHEMA = "drop-explainer.explanation/v1"


def _rule_json(r: RuleTrace, closest: RuleTrace | None) -> dict[str, Any]:
    return {
        "rule": r.index,
        "distance": r.distance,
        "closest": r is closest,
        "failures": [
            {"clause": str(f.clause), "message": f.message, **({"peer": f.peer} if f.peer is not None else {})}
            for f in r.failures
        ],
    }


def _trace_json(t: PolicyTrace, closest: RuleTrace | None) -> dict[str, Any]:
    return {**policy_ref(t.policy), "direction": t.direction, "rules": [_rule_json(r, closest) for r in t.rules]}


def fix_json(f: Fix) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": f.kind, "summary": f.summary, "apply": f.apply, "verified": f.verified}
    if f.target:
        out["target"] = f.target
    if f.patch:
        out["patch"] = [dict(op) for op in f.patch]
    if f.managed_by is not None:
        out["managed_by"] = f.managed_by
    if f.objects:
        out["objects"] = list(f.objects)
    if f.namespace_labels:
        out["namespace_labels"] = [{"namespace": ns, "labels": dict(lb)} for ns, lb in f.namespace_labels.items()]
    if f.blast_radius is not None:
        out["blast_radius"] = {"count": f.blast_radius.count, "examples": list(f.blast_radius.examples),
                               "capped": f.blast_radius.capped}
    return out


def explanation_json(e: Explanation) -> dict[str, Any]:
    c = e.connection
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "headline": e.headline,
        "allowed": e.verdict.allowed if e.service is None else
        bool(e.service.backends) and e.service.allowed_count == len(e.service.backends),
        "complete": e.complete,
        "not_evaluated": list(e.not_evaluated),
        "connection": {"source": subject_json(c.source), "destination": subject_json(c.destination),
                       "port": c.port, "protocol": c.protocol},
        "ingress": direction_json(e.verdict.ingress),
        "egress": direction_json(e.verdict.egress),
        "agreement": {"agrees": e.agreement.agrees, "causes": list(e.agreement.causes)},
        "denying": [_trace_json(t, e.closest) for t in e.denying],
        "closest": None if e.closest is None else {
            **policy_ref(e.closest.policy), "direction": e.closest.direction, "rule": e.closest.index},
        "traps": [{"id": t.id, "title": t.title, "detail": t.detail} for t in e.traps],
        "fixes": [fix_json(f) for f in e.fixes],
        "notes": list(e.notes),
        "profile": e.profile.json(),
    }
    if e.service is not None:
        out["service"] = services_view.view_json(e.service)
    if e.datapath_reason is not None:
        out["datapath_reason"] = e.datapath_reason
    if e.not_enforced is not None:
        out |= {"allowed": True, "not_enforced": e.not_enforced, "would_be_allowed": e.verdict.allowed}
    if e.flow is not None:
        out["flow"] = codec.flow_to_json(e.flow)
    return out


def _indent(text: str, prefix: str = "    ") -> str:
    return "".join(prefix + line + "\n" for line in text.rstrip("\n").split("\n"))


def explanation_text(e: Explanation) -> str:
    lines = [e.headline, e.profile.sentence() + ".", ""]
    if e.service is not None:
        lines += services_view.view_text(e.service)
    local = e.verdict.ingress.node_local
    if local is not None:
        lines += [f"Node-local: {local.why}.", ""]
    if e.flow is not None and e.agreement.agrees is False:
        lines.append("The CNI dropped it, but the policy engine disagrees. Likely causes:")
        lines += [f"  - {c}" for c in e.agreement.causes]
        lines.append("")
    if e.denying:
        lines.append("Why:")
        for t in e.denying:
            rv = f" (resourceVersion {t.policy.resource_version})" if t.policy.resource_version else ""
            if not t.rules:
                lines.append(f"  {t.policy.key}{rv} isolates for {t.direction} and has no {t.direction} rules: "
                             "it denies everything")
                continue
            lines.append(f"  {t.policy.key}{rv}, {t.direction}:")
            for r in t.rules:
                mark = "  <- closest" if r is e.closest else ""
                lines.append(f"    rule {r.index}: {r.distance} failing clause(s){mark}")
                lines += [f"      - {f.message}" for f in r.failures]
        lines.append("")
    if e.traps:
        lines.append("Known trap:" if len(e.traps) == 1 else "Known traps:")
        for trap in e.traps:
            lines.append(f"  [{trap.id}] {trap.title}")
            lines.append(f"      {trap.detail}")
        lines.append("")
    for n in e.notes:
        lines.append(f"Note: {n}")
    if e.notes:
        lines.append("")
    lines += fixes_text(e.fixes, complete=e.complete)
    return "\n".join(lines).rstrip("\n") + "\n"


def fixes_text(fixes: tuple[Fix, ...], *, what: str = "the connection", complete: bool = True) -> list[str]:
    """The fixes of one answer as one change per object, checked together, and what they open together."""
    if not fixes:
        return []
    verified = all(f.verified for f in fixes)
    these = "this change" if len(fixes) == 1 else "these changes"
    check = (f"checked: the engine allows {what} with {these}" if verified
             else f"NOT verified: the engine still denies {what} with {these}")
    if verified and not complete:
        check = (f"checked against Kubernetes NetworkPolicy only: the engine allows {what} with {these}, "
                 "but the policies not evaluated, named above, may still drop it")
    head = "apply this one change" if len(fixes) == 1 else f"apply these {len(fixes)} changes, one per object"
    out = [f"Fix ({check}): {head}."]
    radius = next((f.blast_radius for f in fixes if f.blast_radius is not None), None)
    if radius is None and verified:
        out.append("  What else it allows (its blast radius) is being computed.")
    if radius is not None:
        more = f"; e.g. {', '.join(radius.examples)}" if radius.examples else ""
        least = "at least " if radius.capped else ""
        it = "It" if len(fixes) == 1 else "Together they"
        out.append(f"  {it} also newly allow{'s' if len(fixes) == 1 else ''} {least}{radius.count} other "
                   f"connection(s) in this state{more}.")
    for f in fixes:
        out.append(f"  {f.target + ': ' if f.target else ''}{f.summary}")
        out.append(_indent(f.apply).rstrip("\n"))
    return [*out, ""]
