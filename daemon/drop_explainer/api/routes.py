"""HTTP handlers: `curl explainer/pods/pod-b/drops` and its JSON twin.

A person running plain curl gets text; `Accept: application/json` or
`?format=json` gets the documented JSON. In DaemonSet mode a question about a
pod on another node is answered by that node's instance, and cluster-wide
questions fan out to every instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from drop_explainer.api import costs, guard, params, render, stream, visibility
from drop_explainer.api.openapi import document
from drop_explainer.api.params import BadRequest, DropFilter
from drop_explainer.api.peers import FanOut, PeerError, Peers
from drop_explainer.cluster import workloads
from drop_explainer.explain import combining, enforcement, rendering, services
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine

_ID = re.compile(r"[0-9a-f]{16}")
log = logging.getLogger(__name__)


class DropQuery(Protocol):
    """The drop store's read side, as the API uses it."""

    def query(self, *, since_ns: int | None = None, until_ns: int | None = None, namespace: str | None = None,
              pod: str | None = None, direction: str | None = None, policy: str | None = None,
              trap: str | None = None, workload: str | None = None, limit: int = 100,
              namespaces: Collection[str] | None = None) -> Sequence[Any]: ...

    def get(self, drop_id: str) -> Any: ...

    def pods_named(self, name: str) -> list[str]: ...


@dataclass(slots=True)
class Context:
    """What the handlers need; built once by app.py."""

    engine: Callable[[], Engine]
    store: DropQuery
    peers: Peers
    registry: CollectorRegistry
    ready: Callable[[], tuple[bool, str]]
    healthy: Callable[[], tuple[bool, str]]
    session: aiohttp.ClientSession | None = None
    guard: guard.Middleware | None = None
    """Authentication and authorization (api/guard.py); None: every caller sees everything."""
    own_headers: Callable[[], Awaitable[dict[str, str]]] | None = None
    """The daemon's own Authorization towards its peers (its service-account token)."""
    costs: costs.Costs | None = None
    """Rate, concurrency, deadline and the what-if cache (api/costs.py); None: unlimited (handler unit tests)."""
    stream: stream.Hub | None = None
    """The subscribers of /drops/stream (a sink of the pipeline); None: the route answers 404."""


CTX = web.AppKey("ctx", Context)


def _ctx(request: web.Request) -> Context:
    return request.app[CTX]


def _respond(request: web.Request, data: Any, text: Callable[[], str], status: int = 200) -> web.Response:
    if params.wants_json(request.query, request.headers.get("Accept", "")):
        return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, indent=1))
    return web.Response(text=text(), status=status, content_type="text/plain", charset="utf-8")


def _local(request: web.Request) -> bool:
    return params.scope(request.query) == "local" or not _ctx(request).peers.distributed


def _query_store(ctx: Context, f: DropFilter, namespaces: frozenset[str] | None = None) -> list[dict[str, Any]]:
    records = ctx.store.query(since_ns=f.since_ns, until_ns=f.until_ns, namespace=f.namespace, pod=f.pod,
                              direction=f.direction, policy=f.policy, trap=f.trap, workload=f.workload,
                              limit=f.limit, namespaces=namespaces)
    windowed = f.since_ns is not None or f.until_ns is not None
    return [render.drop_json(r, window=(r.window_flows, r.window_connections) if windowed else None,
                             node=ctx.peers.node_name) for r in records]


async def _fan_out(ctx: Context, path: str, query: Mapping[str, str], headers: list[tuple[str, str]]) -> FanOut:
    """Ask every peer, in one of the bounded fan-out slots."""
    if ctx.costs is None:
        return await ctx.peers.fan_out(_session(ctx), path, query, headers=headers)
    async with ctx.costs.fanout():
        return await ctx.peers.fan_out(_session(ctx), path, query, headers=headers)


def _session(ctx: Context) -> aiohttp.ClientSession:
    if ctx.session is None:
        ctx.session = aiohttp.ClientSession()
    return ctx.session


async def _peer_headers(ctx: Context, access: guard.Access) -> list[tuple[str, str]]:
    """Our own token and the caller's identity, for a peer to answer as the caller may see."""
    if access.everything:
        return []
    return access.peer_headers(await ctx.own_headers() if ctx.own_headers is not None else {})


async def _visible_drops(request: web.Request, drops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each drop as the caller may read it: the other side's details withheld unless they may see it too."""
    access = guard.access_of(request)
    if access.everything:
        return drops
    ends = {ns for d in drops for ns in visibility.drop_ends(d)}
    visible = await access.visible(ends)
    return [visibility.redact_drop(d, visible) for d in drops]


async def _drops(request: web.Request, title: str, f: DropFilter, *, node: str | None = None,
                 merge: bool = False) -> web.Response:
    """Local answer, one peer's answer (node given), or everyone's merged; only what the caller may see.

    ``merge``: the answer about one pod or one policy also carries its drops'
    fixes merged, one change per policy. Not for the namespace and cluster
    lists: polled by dashboards, they would re-plan on every request, and
    each drop's own patch composes anyway. A caller who may not see one end
    of a drop gets no merged change for it (it could name the other side's
    policy).
    """
    ctx = _ctx(request)
    access = guard.access_of(request)
    query = {k: v for k, v in request.query.items() if k not in ("scope", "format")}
    missing: list[str] = []
    allowed: frozenset[str] | None = None
    if f.namespace is not None and not await access.may(f.namespace):
        return _error(request, 403, f"you may not see drops in namespace {f.namespace}")
    if f.policy is not None and not await access.may(f.policy.partition("/")[0]):
        # Else filtering by a policy's name would tell which drops another namespace's policy decides.
        return _error(request, 403, f"you may not see policies of namespace {f.policy.partition('/')[0]}")
    if f.namespace is None:
        allowed = await access.visible(ctx.engine().state.namespaces)
        if allowed is not None and not allowed:
            return _error(request, 403, "you may not see drops in any namespace")
    headers = await _peer_headers(ctx, access)
    if _local(request) or node == ctx.peers.node_name:
        drops = _query_store(ctx, f, allowed)
    elif node is not None:
        try:
            status, body = await ctx.peers.get(_session(ctx), node, request.path, query, headers)
        except PeerError as exc:
            return _error(request, 502, str(exc))
        if status != 200:
            return _respond(request, body, lambda: f"{body.get('error', body)}\n", status)
        drops = body["drops"]
    else:
        out = await _fan_out(ctx, request.path, query, headers)
        drops = _query_store(ctx, f, allowed) + [d for ans in out.answers.values() for d in ans["drops"]]
        drops.sort(key=lambda d: d["last_seen"], reverse=True)
        drops = drops[: f.limit]
        missing = out.missing
    drops = await _visible_drops(request, drops)
    data: dict[str, Any] = {"drops": drops, "nodes_missing": missing}
    note = ""
    if allowed is not None:
        # Say so: an empty-looking cluster must not read as "no drops anywhere".
        data["filtered_to_namespaces"] = sorted(allowed)
        note = f"Only namespaces you may see: {', '.join(sorted(allowed))}.\n"
    mergeable = drops
    if not access.everything:
        seen = await access.visible({ns for d in drops for ns in visibility.drop_ends(d)})
        mergeable = [d for d in drops if not visibility.hidden(visibility.drop_ends(d), seen)]
    # Checked on the current state, off the event loop: the merge re-explains every drop shown.
    merged, covered = (await asyncio.to_thread(combining.for_drops, ctx.engine(), mergeable) if merge and mergeable
                       else ((), frozenset()))
    if merged:
        data["fixes_for_all"] = [rendering.fix_json(f) for f in merged]
        data["fixes_for_all_drops"] = sorted(covered)
    text = "\n".join(rendering.fixes_text(merged, what=f"each of these {len(covered)} drops")) if merged else ""
    return _respond(request, data,
                    lambda: note + render.list_text(title, drops, missing, merged=text, covered=covered))


def _error(request: web.Request, status: int, reason: str, **more: Any) -> web.Response:
    return error_response(request, status, reason, **more)


def error_response(request: web.BaseRequest, status: int, reason: str, *, headers: Mapping[str, str] | None = None,
                   **more: Any) -> web.Response:
    """The one shape of every error: {"error": reason, ...} as JSON when JSON was asked, else text."""
    data = {"error": reason, **more}
    if params.answers_json(request.query, request.headers.get("Accept", "")):
        return web.json_response(data, status=status, headers=headers)
    extra = "".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}\n" for k, v in more.items())
    return web.Response(text=f"error: {reason}\n{extra}", status=status, content_type="text/plain",
                        charset="utf-8", headers=headers)


async def _pod_namespaces(request: web.Request, name: str) -> list[str]:
    """Namespaces with a pod of this name, among those the caller may see (the others are not named)."""
    ctx = _ctx(request)
    live = {p.namespace for p in ctx.engine().state.pods_by_name.get(name, ())}
    found = live | set(ctx.store.pods_named(name))
    visible = await guard.access_of(request).visible(found)
    return sorted(found if visible is None else found & visible)


async def pod_drops(request: web.Request) -> web.Response:
    pod = params.object_name(request.match_info["pod"])
    ns = request.query.get("namespace")
    if ns is None:
        candidates = await _pod_namespaces(request, pod)
        if not candidates:
            return _error(request, 404, f"no pod named {pod} in the cluster state or the drop history")
        if len(candidates) > 1:
            return _error(request, 409, f"pod name {pod} exists in {len(candidates)} namespaces; add ?namespace=",
                          candidates=candidates)
        ns = candidates[0]
    return await _pod(request, params.namespace(ns), pod, extra=frozenset({"namespace"}))


async def namespaced_pod_drops(request: web.Request) -> web.Response:
    ns = params.namespace(request.match_info["namespace"])
    return await _pod(request, ns, params.object_name(request.match_info["pod"]))


async def _pod(request: web.Request, ns: str, pod: str, extra: frozenset[str] = frozenset()) -> web.Response:
    ctx = _ctx(request)
    f = params.drop_filter(request.query, extra=extra, namespace=ns, pod=pod)
    live = ctx.engine().state.pods.get(f"{ns}/{pod}")
    node = live.node_name if live is not None else None
    if live is not None:
        owner = workloads.of_pod(live)
        if owner.kind != "Pod":
            # Signatures are kept per workload, on the pod first seen: a replica made after them has them
            # too, and they may be stored by the daemon of any node the workload ran on: ask everyone.
            f, node = dataclasses.replace(f, pod=None, workload=owner.key), None
    # A pod that is gone (or not scheduled) has its history wherever it ran: ask everyone.
    return await _drops(request, f"Drops of pod {ns}/{pod}", f, node=node or None, merge=True)


async def namespace_drops(request: web.Request) -> web.Response:
    ns = params.namespace(request.match_info["namespace"])
    return await _drops(request, f"Drops in namespace {ns}", params.drop_filter(request.query, namespace=ns))


async def all_drops(request: web.Request) -> web.Response:
    return await _drops(request, "Drops in the cluster", params.drop_filter(request.query))


async def drop_stream(request: web.Request) -> web.StreamResponse:
    """Follow new signatures (and with all=true every drop) from now on: api/stream.py."""
    ctx = _ctx(request)
    f = stream.stream_filter(request.query)
    if ctx.stream is None:
        return _error(request, 404, "this daemon has no drop stream")
    access = guard.access_of(request)
    if f.namespace is not None and not await access.may(f.namespace):
        return _error(request, 403, f"you may not see drops in namespace {f.namespace}")
    if f.policy is not None and not await access.may(f.policy.partition("/")[0]):
        return _error(request, 403, f"you may not see policies of namespace {f.policy.partition('/')[0]}")
    allowed = await access.visible(ctx.engine().state.namespaces)
    if allowed is not None and not allowed:
        return _error(request, 403, "you may not see drops in any namespace")
    return await stream.follow(request, ctx.stream, f, allowed, lift_deadline=lambda: costs.lift_deadline(request),
                               distributed=ctx.peers.distributed)


async def policy_drops(request: web.Request) -> web.Response:
    ns = params.namespace(request.match_info["namespace"])
    name = params.object_name(request.match_info["name"], "policy")
    query = dict(request.query)
    if "policy" in query:
        raise BadRequest("policy is given by the path here")
    query["policy"] = f"{ns}/{name}"
    f = params.drop_filter(query)
    return await _drops(request, f"Drops decided by policy {ns}/{name}", f, merge=True)


async def drop_by_id(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    drop_id = request.match_info["id"]
    if not _ID.fullmatch(drop_id):
        raise BadRequest(f"drop id {drop_id[:64]!r}: expected 16 hex digits")
    params.check_known(request.query, set())
    local = _local(request)
    access = guard.access_of(request)
    record = ctx.store.get(drop_id)
    if record is not None:
        data = render.drop_json(record, samples=record.samples, node=ctx.peers.node_name)
        ends = [ns for ns in visibility.drop_ends(data) if ns]
        visible = await access.visible(ends)
        if visible is not None and not (set(ends) & visible):
            # Not 403: that would tell the caller such a drop exists.
            return _error(request, 404, f"no drop {drop_id} that you may see")
        data = visibility.redact_drop(data, visible)
        return _respond(request, data, lambda: render.drop_text(data))
    if not local:
        out = await _fan_out(ctx, request.path, {}, await _peer_headers(ctx, access))
        if out.answers:
            found: dict[str, Any] = (await _visible_drops(request, [next(iter(out.answers.values()))]))[0]
            return _respond(request, found, lambda: render.drop_text(found))
        if out.missing:
            return _error(request, 404, f"no drop {drop_id} here; node(s) {', '.join(out.missing)} did not answer")
    return _error(request, 404, f"no drop {drop_id}")


async def whatif(request: web.Request) -> web.Response:
    asked = params.whatif_query(request.query)
    try:
        query = queries.parse_query(asked)
        engine = _ctx(request).engine()
        conn = queries.connection(engine.state, query)
    except queries.AmbiguousQuery as exc:
        return _error(request, 409, str(exc), candidates=exc.candidates)
    except queries.BadQuery as exc:
        raise BadRequest(str(exc)) from None
    access = guard.access_of(request)
    ends = [s.pod.namespace for s in (conn.source, conn.destination) if s.pod is not None]
    visible = await access.visible(ends)
    if visible is not None and not (set(ends) & visible):
        return _error(request, 403, "you may ask what-if only about a connection with an end in a namespace you "
                      "may see" + (f" (asked: {', '.join(sorted(set(ends)))})" if ends else ""))

    def compute() -> costs.Answer:
        expl = services.explain(engine, conn)
        data = enforcement.label_answer(services.answer_json(query, conn, expl), engine.state.enforcer)
        return data, rendering.explanation_text(expl)

    limits = _ctx(request).costs
    try:
        if limits is None:
            data, text = compute()
        else:
            key = tuple(sorted((k, v) for k, v in request.query.items() if k not in params.COMMON))
            data, text = await limits.whatif(engine.state.generation, key, compute)
    except queries.BadQuery as exc:  # e.g. a port the Service does not have
        raise BadRequest(str(exc)) from None
    shown = visibility.redact_whatif(data, visible)
    if shown is None:
        return _error(request, 403, "you may not see either end of this connection")
    if "withheld" in shown:
        return _respond(request, shown, lambda: visibility.text(shown["explanation"]))
    return _respond(request, data, lambda: text)


async def healthz(request: web.Request) -> web.Response:
    ok, why = _ctx(request).healthy()
    return web.Response(text=f"{'ok' if ok else 'unhealthy'}: {why}\n", status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    ok, why = _ctx(request).ready()
    return web.Response(text=f"{'ready' if ok else 'not ready'}: {why}\n", status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(_ctx(request).registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


@web.middleware
async def errors(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every error in the one documented shape, JSON when JSON was asked; never a traceback to the caller.

    Bad input is a 400 with its reason. aiohttp's own answers (404 for an
    unknown path, 405 for a method other than GET, with its Allow header) get
    the same shape; anything unexpected is logged with its traceback here and
    the caller gets a 500 that says only that.
    """
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(request, 400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: exc.headers[k] for k in ("Allow", "Retry-After") if k in exc.headers}
        reason = {404: f"no such path {request.path[:200]!r}; see /openapi.json",
                  405: f"method {request.method} not allowed here; use GET"}.get(exc.status, exc.reason)
        return error_response(request, exc.status, reason, headers=kept)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api_internal_error", extra={"path": request.path[:200], "method": request.method})
        return error_response(request, 500, "internal error; the daemon's log has the details")


ROUTES: Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "/pods/{pod}/drops": pod_drops,
    "/namespaces/{namespace}/pods/{pod}/drops": namespaced_pod_drops,
    "/namespaces/{namespace}/drops": namespace_drops,
    "/drops": all_drops,
    "/drops/stream": drop_stream,  # before /drops/{id}, which would take "stream" for an id
    "/drops/{id}": drop_by_id,
    "/policies/{namespace}/{name}/drops": policy_drops,
    "/whatif": whatif,
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,
    "/openapi.json": openapi,
}


def make_app(ctx: Context) -> web.Application:
    middlewares: list[guard.Middleware] = [errors] if ctx.guard is None else [errors, ctx.guard]
    if ctx.costs is not None:
        middlewares.append(ctx.costs.middleware())  # after the guard: it names the caller
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[CTX] = ctx
    for path, handler in ROUTES.items():
        app.router.add_get(path, handler, allow_head=False)

    async def close_session(_: web.Application) -> None:
        if ctx.session is not None:
            await ctx.session.close()

    app.on_cleanup.append(close_session)
    if ctx.stream is not None:
        hub = ctx.stream

        async def end_streams(_: web.Application) -> None:
            # Before the runner waits for handlers to finish: a stream would hold a stop for its whole timeout.
            hub.close("the daemon is stopping; reconnect to its next instance")

        app.on_shutdown.append(end_streams)
    return app
