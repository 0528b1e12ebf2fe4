"""From a connection or a dropped flow to the whole answer: verdict, why, traps, fix.

Pure: takes an Engine (a snapshot) and a Flow, does no I/O. The daemon and the
CLI call the same functions, so what `curl` shows is what the tests check.
"""

from __future__ import annotations

from dataclasses import replace

from drop_explainer.cluster.objects import Node, Pod, PolicyType
from drop_explainer.explain import antrea, calico, cilium, enforcement, fixes, probes, tracing, traps
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
    elsewhere = probes.other_node_note(engine, conn)
    notes += (elsewhere,) if elsewhere is not None else ()
    traces: tuple[PolicyTrace, ...] = ()
    if not verdict.egress.allowed:
        traces += tracing.trace_direction(engine, conn, PolicyType.EGRESS)
    if not verdict.ingress.allowed:
        traces += tracing.trace_direction(engine, conn, PolicyType.INGRESS)
    # The kubelet-probe trap also stands where the engine allows: the CNI dropped what the spec exempts.
    found = traps.detect(engine, conn, traces, flow) if traces else tuple(traps.kubelet_probe(engine, conn, flow))
    denies = cilium.deny_notes(verdict)
    plan = fixes.plan(engine, conn, traces, radius=blast_radius) if traces and not denies else ()
    problem = fixes.unresolved(engine, conn) if traces and not denies else None
    notes = (*notes, *denies)
    if problem is not None:
        notes = (*notes, f"no fix is offered: {problem}")
    if any(t.id == probes.TRAP_ID for t in found):
        plan = probes.with_node_fix(engine, conn, traces, plan, radius=blast_radius)
    agreement = _agreement(verdict, flow)
    if verdict.allowed and flow is not None and any(t.id == probes.TRAP_ID for t in found):
        agreement = replace(agreement, causes=("the source is the pod's own node, which networking/v1 and the "
                                               f"CNI profile {engine.profile.describe()} exempt from isolation; the "
                                               "CNI's own setting differs (see the kubelet-probe trap)",
                                               *agreement.causes))
    model_notes = cilium.notes(engine, conn, verdict) if engine.state.compiled else ()
    expl = Explanation(conn, verdict, "", traces, tracing.closest_rule(traces), found, plan, agreement, flow,
                       (*notes, *model_notes), profile=engine.profile)
    led = enforcement.lead(replace(expl, headline=headline(expl)), engine.state.enforcer,
                           engine.state.not_evaluated)
    return _undecided(led, verdict.unsure)


def _undecided(expl: Explanation, unsure: tuple[str, ...]) -> Explanation:
    """Never a confident answer that depends on what is not evaluated (toFQDNs, host policies...)."""
    if not unsure:
        return expl
    head = expl.headline
    if head.startswith("ALLOWED "):
        head = "NOT DECIDED " + head.removeprefix("ALLOWED ")
    head += f"; not decided: {unsure[0]}{' (and more)' if len(unsure) > 1 else ''}"
    return replace(expl, headline=head, not_evaluated=(*expl.not_evaluated, *unsure))


def explain_flow(engine: Engine, flow: Flow, *, blast_radius: bool = True) -> Explanation:
    """Explain what the CNI reported; a non-policy drop is not blamed on policies."""
    conn, notes = flow_connection(engine, flow)
    if flow.verdict is Verdict.DROPPED and flow.drop_kind is DropKind.OTHER:
        verdict = engine.evaluate(conn)
        reason = describe_drop_reason(flow.drop_reason)
        expl = Explanation(conn, verdict, "", agreement=Agreement(None, ()), flow=flow, notes=notes,
                           datapath_reason=reason, profile=engine.profile)
        return enforcement.lead(replace(expl, headline=headline(expl)), engine.state.enforcer,
                            engine.state.not_evaluated)
    if flow.is_reply:
        notes += ("the CNI marked this packet as a reply; replies of allowed connections are never dropped by "
                  "NetworkPolicy, so the connection itself was probably opened before a policy change",)
    if conn.destination.service is not None:
        # Still a Service address (reported before translation): judged through its backends.
        from drop_explainer.explain import services  # services builds on this module

        expl = services.explain(engine, conn, flow=flow, notes=notes, port_notes=False, blast_radius=blast_radius)
    else:
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
    plan = fixes.plan(engine, expl.connection, expl.denying, radius=True)
    if any(t.id == probes.TRAP_ID for t in expl.traps):
        plan = probes.with_node_fix(engine, expl.connection, expl.denying, plan)
    return replace(expl, fixes=plan)


def flow_connection(engine: Engine, flow: Flow) -> tuple[Connection, tuple[str, ...]]:
    notes: list[str] = []
    if flow.protocol.value not in ("TCP", "UDP", "SCTP"):
        notes.append(f"NetworkPolicy v1 names no ports for {flow.protocol.value}: only rules without ports "
                     "admit it, and CNIs differ in how they treat it")
    elif flow.destination_port is None:
        raise UnexplainableFlow("flow has no destination port")
    reporter = engine.state.nodes.get(flow.node) if flow.node else None
    src = _subject(engine, flow.source, notes, reporter)
    dst = _subject(engine, flow.destination, notes, reporter)
    return Connection(src, dst, flow.destination_port or 0, flow.protocol.value), tuple(notes)


def _subject(engine: Engine, ep: Endpoint, notes: list[str], node: Node | None = None) -> Subject:
    """``node``: the node that reported the flow, which a host endpoint is."""
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
    if ep.kind is EndpointKind.HOST and node is not None and subject.kind in (SubjectKind.EXTERNAL,
                                                                             SubjectKind.POD_NETWORK):
        # Hubble's host identity is the reporting node itself, whatever address it used (cilium_host...).
        return Subject(SubjectKind.NODE, subject.ip, node=node)
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
        if e.verdict.ingress.node_exempt:
            return (f"{word} {what}: the source is the pod's own node, which is exempt from its ingress isolation "
                    f"(CNI profile {e.profile.describe()})")
        allowing = cilium.policies_of((*e.verdict.ingress.rules_allowing, *e.verdict.egress.rules_allowing))
        if allowing:
            return f"{word} {what}: the policies in the state allow it ({', '.join(allowing)} among them)"
        return f"{word} {what}: the NetworkPolicies in the state allow it"
    parts = []
    for t_dir, d in (("egress", e.verdict.egress), ("ingress", e.verdict.ingress)):
        if d.allowed:
            continue
        at = _who(c.source) if t_dir == "egress" else _who(c.destination)
        if d.isolated_by_mode is not None and not d.policies:
            parts.append(f"{t_dir} of {at} is isolated by the datapath: {d.isolated_by_mode}")
            continue
        local = "" if d.node_local is None else f" (the pod's own node is not exempt under CNI profile " \
            f"{e.profile.describe()})"
        model = cilium.direction_part(d, t_dir, at)
        if model is not None:
            parts.append(model + ("" if d.denied_by else local))
            continue
        names = ", ".join(p.key for p in d.policies)
        parts.append(f"{t_dir} of {at} is isolated by {names} and no rule admits it{local}")
    trap = f" [trap: {', '.join(t.id for t in e.traps)}]" if e.traps else ""
    return f"DENIED {what}: {'; '.join(parts)}{trap}"


__all__ = ["UnexplainableFlow", "complete", "explain_connection", "explain_flow", "flow_connection", "headline"]
