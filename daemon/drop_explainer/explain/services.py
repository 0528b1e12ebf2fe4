"""Explaining a connection to a Service: one verdict per ready backend.

Policies judge the translated packet (backend pod address, targetPort), so
a Service is allowed to the backends whose policies admit it; saying
"ALLOWED ... service backend/backend" because no policy selects a cluster
IP is the confident falsehood this module exists to prevent. The answer is
the first denied backend's full explanation (so its why, traps and fixes
are those of a real packet), with the Service's k-of-n summary on top.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from drop_explainer.cluster.objects import Service, ServicePort
from drop_explainer.explain import enforcement, explaining, rendering, services_view
from drop_explainer.explain.model import Agreement, BackendView, Explanation, ServiceView
from drop_explainer.flows.model import Flow
from drop_explainer.policy import endpoints, queries, services
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import NOT_ISOLATED, Connection, Engine, Verdict


def undeclared_port_note(dst: Subject, port: int, protocol: str) -> str | None:
    """A pod that declares container ports, none of them this one: the process may not listen there."""
    pod = dst.pod
    if pod is None or not dst.is_pod:
        return None
    declared = [p for c in pod.containers for p in c.ports]
    if any(p.container_port == port and p.protocol == protocol for p in declared):
        return None
    listed = ", ".join(f"{p.container_port}/{p.protocol}" + (f" ({p.name})" if p.name else "") for p in declared)
    return (f"pod {pod.key} declares no container port {port}/{protocol}"
            + (f" (it declares {listed})" if listed else " (it declares none)")
            + "; declaring ports is optional, so the verdict stands, but check that something listens there")


def _reason(headline: str) -> str:
    """A backend headline without its "VERB a -> b PROTO/PORT: " lead."""
    return headline.split(": ", 1)[1] if ": " in headline else headline


def explain_service(engine: Engine, source: Subject, svc: Service, sp: ServicePort, *, flow: Flow | None = None,
                    notes: tuple[str, ...] = (), port_notes: bool = False, blast_radius: bool = True) -> Explanation:
    """Every ready backend judged on its targetPort; the answer leads with the first denied one."""
    found = services.backends(engine.state, svc, sp)
    views: list[BackendView] = []
    judged: list[Explanation] = []
    skipped: list[str] = []
    for b in found.found:
        if b.port is None:
            skipped.append(f"{b.name} defines no {sp.protocol} port named {sp.target_port}, so it is not a backend "
                           f"of port {sp.port}")
            continue
        dst = endpoints.pod_subject(engine.state, b.pod, b.ip) if b.pod is not None else \
            endpoints.ip_subject(engine.state, b.ip or "")
        src, dst = endpoints.same_family(source, dst)
        extra = notes
        note = undeclared_port_note(dst, b.port, sp.protocol) if port_notes else None
        if note is not None:
            extra += (note,)
        expl = explaining.explain_connection(engine, Connection(src, dst, b.port, sp.protocol), flow, extra,
                                             blast_radius=blast_radius)
        judged.append(expl)
        views.append(BackendView(b.name, dst.ip, b.port, expl.verdict.allowed, _reason(expl.headline)))
    view = ServiceView(svc.key, sp.port, sp.protocol, str(sp.target_port), tuple(views), found.origin,
                       found.not_ready)
    more = tuple(skipped)
    if found.not_ready:
        more += (f"{found.not_ready} endpoint(s) of the EndpointSlices are not ready and receive no new "
                 "connections; they are not counted",)
    if not svc.cluster_ips:
        more += (f"service {svc.key} is headless: clients reach its pods directly by their addresses, on the port "
                 "they dial (the targetPort here)",)
    if found.origin == services.FROM_SELECTOR and views:
        more += ("backends are the Running pods the Service selector picks (the state has no EndpointSlices for "
                 "it), so readiness is not known",)
    if not judged:
        return _no_backends(engine, source, svc, sp, view=view, flow=flow, notes=notes + more)
    primary = next((e for e in judged if not e.verdict.allowed), judged[0])
    headline = service_headline(primary, view)
    return replace(primary, headline=headline, service=view, notes=(*primary.notes, *more))


def service_headline(primary: Explanation, view: ServiceView) -> str:
    c = primary.connection
    src = c.source.pod.key if c.source.pod is not None and c.source.is_pod else c.source.describe()
    what = f"{src} -> service {view.service} {view.protocol}/{view.port} (targetPort {view.target})"
    n, k = len(view.backends), view.allowed_count
    denied = [b for b in view.backends if not b.allowed]
    if k == n:
        word = "DROPPED by the CNI, but ALLOWED" if primary.agreement.agrees is False else "ALLOWED"
    else:
        word = "DENIED" if k == 0 else "PARTLY DENIED"
    shown = "; ".join(f"{b.pod}: {b.why}" for b in denied[:3]) + (f"; and {len(denied) - 3} more"
                                                                   if len(denied) > 3 else "")
    headline = f"{word} {what}: allowed to {k} of {n} backend(s)" + (f"; denied at {shown}" if denied else "")
    if primary.not_enforced is not None:
        headline = f"NOT ENFORCED: {primary.not_enforced} {enforcement.WOULD_BE}{headline}"
    return headline


def _no_backends(engine: Engine, source: Subject, svc: Service, sp: ServicePort, *, view: ServiceView,
                 flow: Flow | None, notes: tuple[str, ...]) -> Explanation:
    """Nothing to judge: the connection fails whatever the policies say, and we say so."""
    dst = endpoints.service_subject(svc)
    conn = Connection(source, dst, sp.port, sp.protocol)
    src = source.pod.key if source.pod is not None and source.is_pod else source.describe()
    where = "its EndpointSlices list no ready endpoint" if view.source_of_backends == services.FROM_SLICES else \
        ("it has no selector and the state no EndpointSlices for it" if not svc.selector
         else "no Running pod matches its selector")
    headline = (f"NO BACKENDS {src} -> service {svc.key} {sp.protocol}/{sp.port}: {where}, so the connection fails "
                "whatever the policies say (no policy was evaluated)")
    expl = Explanation(conn, Verdict(NOT_ISOLATED, NOT_ISOLATED), headline, agreement=Agreement(None), flow=flow,
                       notes=notes, profile=engine.profile, service=view)
    return enforcement.lead(expl, None, engine.state.not_evaluated)


def allowed(expl: Explanation) -> bool:
    """The answer's verdict: for a Service, allowed to every backend (and there is one)."""
    if expl.service is not None:
        return bool(expl.service.backends) and expl.service.allowed_count == len(expl.service.backends)
    return expl.verdict.allowed


def answer_json(query: queries.Query, conn: Connection, expl: Explanation) -> dict[str, Any]:
    """A what-if answer: the verdict as asked, the profile, the Service's backends, the explanation."""
    out = queries.verdict_json(query, conn if expl.service is None else expl.connection, expl.verdict, expl.profile)
    # The port as asked (the Service port); each backend's targetPort is in service.backends.
    out |= {"from": query.source, "to": query.destination, "port": conn.port, "allowed": allowed(expl)}
    if expl.service is not None:
        out["service"] = services_view.view_json(expl.service)
    return out | {"explanation": rendering.explanation_json(expl)}


def explain(engine: Engine, conn: Connection, *, flow: Flow | None = None, notes: tuple[str, ...] = (),
            port_notes: bool = True, blast_radius: bool = True) -> Explanation:
    """Any connection: to a Service through its backends, to anything else directly."""
    svc = conn.destination.service
    if svc is not None:
        sp = services.find_port(svc, conn.port, conn.protocol)
        if sp is not None:
            return explain_service(engine, conn.source, svc, sp, flow=flow, notes=notes, port_notes=port_notes,
                                   blast_radius=blast_radius)
        if flow is None:
            raise queries.BadQuery(f"service {svc.key} has no {conn.protocol} port {conn.port}; its ports: "
                                   f"{services.describe_ports(svc)}")
        notes += (f"service {svc.key} has no {conn.protocol} port {conn.port} (its ports: "
                  f"{services.describe_ports(svc)}); nothing forwards this connection",)
    elif port_notes:
        note = undeclared_port_note(conn.destination, conn.port, conn.protocol)
        notes += (note,) if note is not None else ()
    return explaining.explain_connection(engine, conn, flow, notes, blast_radius=blast_radius)
