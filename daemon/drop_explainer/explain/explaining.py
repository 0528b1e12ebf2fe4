"""From a connection or a dropped flow to the whole answer: verdict, why, traps, fix.

Pure: takes an Engine (a snapshot) and a Flow, does no I/O. The daemon and the
CLI call the same functions, so what `curl` shows is what the tests check.
"""

from __future__ import annotations

from dataclasses import replace

from drop_explainer.cluster.objects import Pod, PolicyType
from drop_explainer.explain import antrea, calico, enforcement, fixes, tracing, traps
from drop_explainer.explain.model import Agreement, Explanation, PolicyTrace
from drop_explainer.explain.reasons import describe_drop_reason
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.policy import endpoints
from drop_explainer.policy.endpoints import Subject, SubjectKind
from drop_explainer.policy.engine import Connection, Engine
from drop_explainer.policy.engine import Verdict as EngineVerdict

_STALE = "the cluster state may be stale: a policy, label or pod changed after the drop"
_DELAY = "enforcement delay: the CNI had not yet applied a recent policy change"
_CNI_POLICY = ("a CNI-specific policy kind not modelled here (CiliumNetworkPolicy, "
               "CiliumClusterwideNetworkPolicy, Calico NetworkPolicy/GlobalNetworkPolicy, AdminNetworkPolicy)")


class UnexplainableFlow(ValueError):
    """A flow without the fields needed to name a connection (no destination port or address)."""


def explain_connection(engine: Engine, conn: Connection, flow: Flow | None = None,
                       notes: tuple[str, ...] = (), *, blast_radius: bool = True) -> Explanation:
    verdict = engine.evaluate(conn)
    traces: tuple[PolicyTrace, ...] = ()
    if not verdict.egress.allowed:
        traces += tracing.trace_direction(engine, conn, PolicyType.EGRESS)
    if not verdict.ingress.allowed:
        traces += tracing.trace_direction(engine, conn, PolicyType.INGRESS)
    found = traps.detect(engine, conn, traces, flow) if traces else ()
    plan = fixes.plan(engine, conn, traces, radius=blast_radius) if traces else ()
    problem = fixes.unresolved(engine, conn) if traces else None
    if problem is not None:
        notes = (*notes, f"no fix is offered: {problem}")
    agreement = _agreement(verdict, flow)
    expl = Explanation(conn, verdict, "", traces, tracing.closest_rule(traces), found, plan, agreement, flow, notes)
    return enforcement.lead(replace(expl, headline=headline(expl)), engine.state.enforcer,
                            engine.state.not_evaluated)


def explain_flow(engine: Engine, flow: Flow, *, blast_radius: bool = True) -> Explanation:
    """Explain what the CNI reported; a non-policy drop is not blamed on policies."""
    conn, notes = flow_connection(engine, flow)
    if flow.verdict is Verdict.DROPPED and flow.drop_kind is DropKind.OTHER:
        verdict = engine.evaluate(conn)
        reason = describe_drop_reason(flow.drop_reason)
        expl = Explanation(conn, verdict, "", agreement=Agreement(None, ()), flow=flow, notes=notes,
                           datapath_reason=reason)
        return enforcement.lead(replace(expl, headline=headline(expl)), engine.state.enforcer,
                            engine.state.not_evaluated)
    if flow.is_reply:
        notes += ("the CNI marked this packet as a reply; replies of allowed connections are never dropped by "
                  "NetworkPolicy, so the connection itself was probably opened before a policy change",)
    expl = explain_connection(engine, conn, flow, notes, blast_radius=blast_radius)
    return antrea.with_attribution(calico.with_attribution(expl))


def complete(engine: Engine, expl: Explanation) -> Explanation:
    """The explanation with the blast radius of its fixes computed (the daemon defers it).

    The plan is made again with the radius known, so where a namespace label
    turns out to open more than a rule, the rule is what the completed
    explanation proposes.
    """
    if not expl.fixes or all(f.blast_radius is not None or not f.verified for f in expl.fixes):
        return expl
    return replace(expl, fixes=fixes.plan(engine, expl.connection, expl.denying, radius=True))


def flow_connection(engine: Engine, flow: Flow) -> tuple[Connection, tuple[str, ...]]:
    notes: list[str] = []
    if flow.protocol.value not in ("TCP", "UDP", "SCTP"):
        notes.append(f"NetworkPolicy v1 names no ports for {flow.protocol.value}: only rules without ports "
                     "admit it, and CNIs differ in how they treat it")
    elif flow.destination_port is None:
        raise UnexplainableFlow("flow has no destination port")
    src = _subject(engine, flow.source, notes)
    dst = _subject(engine, flow.destination, notes)
    return Connection(src, dst, flow.destination_port or 0, flow.protocol.value), tuple(notes)


def _subject(engine: Engine, ep: Endpoint, notes: list[str]) -> Subject:
    state = engine.state
    if ep.namespace and ep.pod:
        pod = state.pods.get(f"{ep.namespace}/{ep.pod}")
        if pod is not None:
            return endpoints.pod_subject(state, pod, ep.ip)
        # The pod may be gone by now (a Job, a rollout); what the CNI saw of
        # it is still enough to evaluate selectors.
        notes.append(f"pod {ep.namespace}/{ep.pod} is not in the cluster state; its labels are taken from the flow")
        ghost = Pod(ep.namespace, ep.pod, dict(ep.labels), (ep.ip,) if ep.ip else ())
        return endpoints.pod_subject(state, ghost, ep.ip)
    if ep.ip is None and ep.namespace and ep.pod_prefix:  # Calico's aggregated name: nginx-86c57db685-*
        return calico.prefix_subject(state, ep.namespace, ep.pod_prefix, ep.labels, notes)
    if ep.ip is None:
        raise UnexplainableFlow(f"endpoint of kind {ep.kind} has neither a pod nor an address")
    subject = endpoints.ip_subject(state, ep.ip)
    if subject.kind is SubjectKind.EXTERNAL and ep.kind in (EndpointKind.HOST, EndpointKind.REMOTE_NODE):
        return Subject(SubjectKind.NODE, subject.ip)
    return subject


def _denied_direction(flow: Flow) -> str | None:
    return {Direction.INGRESS: "ingress", Direction.EGRESS: "egress"}.get(flow.direction)


def _agreement(verdict: EngineVerdict, flow: Flow | None) -> Agreement:
    if flow is None or flow.verdict not in (Verdict.DROPPED, Verdict.AUDIT):
        return Agreement(None)
    direction = _denied_direction(flow)
    engine_denies = (not verdict.allowed if direction is None
                     else not (verdict.ingress if direction == "ingress" else verdict.egress).allowed)
    if flow.drop_kind is DropKind.POLICY_DENY:
        # Kubernetes NetworkPolicy has no deny rules: an explicit deny is
        # always another policy kind, whatever our engine says.
        return Agreement(False, ("the CNI reports an explicit deny rule; Kubernetes NetworkPolicy has none, so "
                                 "this is " + _CNI_POLICY,))
    if engine_denies:
        return Agreement(True)
    causes = [_CNI_POLICY, _STALE, _DELAY]
    named = [h for h in flow.attribution if h.action != "allow"]
    if named:
        causes.insert(0, "the CNI names " + ", ".join(
            f"{h.kind} {h.namespace + '/' if h.namespace else ''}{h.name}" for h in named)
            + ", which the state does not show denying this connection")
    if direction is not None and not verdict.allowed:
        causes.insert(0, f"the engine denies the other direction, not {direction}")
    return Agreement(False, tuple(causes))


def _who(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.is_pod else s.describe()


def headline(e: Explanation) -> str:
    c = e.connection
    what = f"{_who(c.source)} -> {_who(c.destination)} {c.protocol}/{c.port}"
    if e.datapath_reason is not None:
        return f"DROPPED {what}: not a policy drop; the datapath says {e.datapath_reason}"
    if e.verdict.allowed:
        word = "DROPPED by the CNI, but" if e.flow is not None and e.agreement.agrees is False else "ALLOWED"
        return f"{word} {what}: the NetworkPolicies in the state allow it"
    parts = []
    for t_dir, d in (("egress", e.verdict.egress), ("ingress", e.verdict.ingress)):
        if d.allowed:
            continue
        at = _who(c.source) if t_dir == "egress" else _who(c.destination)
        names = ", ".join(p.key for p in d.policies)
        parts.append(f"{t_dir} of {at} is isolated by {names} and no rule admits it")
    trap = f" [trap: {', '.join(t.id for t in e.traps)}]" if e.traps else ""
    return f"DENIED {what}: {'; '.join(parts)}{trap}"


__all__ = ["UnexplainableFlow", "complete", "explain_connection", "explain_flow", "flow_connection", "headline"]
