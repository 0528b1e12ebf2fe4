"""The API's door: who is asking (bearer token), and what they may see (per namespace).

Every request but the probes and the OpenAPI document needs a bearer token
the API server accepts (TokenReview). The handler then gets an ``Access``
for the caller, which answers "may they see namespace X" by
SubjectAccessReview (``--auth-verb`` on ``--auth-resource`` in
``--auth-group``, default ``get drops.drop-explainer.io``). ``/metrics``
needs ``get`` on the non-resource URL ``/metrics``, as kube-rbac-proxy asks.

Impersonation: during fan-out an instance asks its peers with its own
service-account token plus ``Impersonate-User``/``-Group``/``-Uid``/``-Extra-*``
naming the original caller, so each peer filters its answer for that caller.
A peer honours those headers only when the token itself belongs to
``--auth-peer-user`` (the daemon's service account, checked by TokenReview);
from anyone else they are refused with 403, so a client cannot claim to be
someone else.

Client certificates (``--tls-client-ca``, api/tls.py): a certificate the TLS
layer verified stands for the token when none is sent, read as the API
server reads one (CN the user, O the groups); it is then authorized like
any other caller.

With ``--auth none`` every request gets an Access that sees everything
(the demo, tests, a port-forward on a laptop); the daemon says so at start.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from aiohttp import typedefs, web

from drop_explainer.api import tls
from drop_explainer.api.auth import Attributes, AuthUnavailable, Caller, Reviewer, gather_bounded
from drop_explainer.settings import AuthSettings

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
"""Probes (the kubelet has no token) and the API's own description, which tells nothing about the cluster."""
IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"
IMPERSONATE_EXTRA = "Impersonate-Extra-"


@dataclass(slots=True)
class Access:
    """What one request's caller may see; ``reviewer`` None means --auth none (everything)."""

    caller: Caller | None = None
    reviewer: Reviewer | None = None
    impersonated: bool = False
    _memo: dict[str, bool] = field(default_factory=dict)

    @property
    def everything(self) -> bool:
        """True without authorization (--auth none): no check is made at all."""
        return self.reviewer is None

    async def may(self, namespace: str) -> bool:
        """May the caller see drops in ``namespace`` ("" = in every namespace)?"""
        if self.reviewer is None:
            return True
        if namespace not in self._memo:
            assert self.caller is not None
            ok = await self.reviewer.allowed(self.caller, self.reviewer.namespace_attrs(namespace))
            self._memo[namespace] = ok
        return self._memo[namespace]

    async def visible(self, namespaces: Iterable[str]) -> frozenset[str] | None:
        """Of ``namespaces``, those the caller may see; None when they may see every namespace."""
        if await self.may(""):
            return None
        wanted = {ns for ns in namespaces if ns}
        return await gather_bounded({ns: self.may(ns) for ns in sorted(wanted)})

    def peer_headers(self, own: dict[str, str]) -> list[tuple[str, str]]:
        """Headers for a peer: our own Authorization plus the caller as Impersonate-*."""
        out = [(k, v) for k, v in own.items() if k.lower() == "authorization"]
        if self.caller is None:
            return out
        c = self.caller
        out.append((IMPERSONATE_USER, c.user))
        out += [(IMPERSONATE_GROUP, g) for g in c.groups]
        if c.uid:
            out.append((IMPERSONATE_UID, c.uid))
        out += [(IMPERSONATE_EXTRA + quote(k, safe=""), v) for k, values in c.extra for v in values]
        return out


REQUEST_KEY = web.RequestKey("access", Access)


def access_of(request: web.Request) -> Access:
    """The request's Access; an unguarded app (unit tests of the handlers) sees everything."""
    found = request.get(REQUEST_KEY)
    return found if isinstance(found, Access) else Access()


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="drop-explainer"'} if status == 401 else {}
    as_json = request.query.get("format") == "json" or "application/json" in request.headers.get("Accept", "")
    if as_json:
        return web.Response(text=json.dumps({"error": reason}), status=status, headers=headers,
                            content_type="application/json")
    return web.Response(text=f"error: {reason}\n", status=status, headers=headers, content_type="text/plain")


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def impersonated(request: web.Request) -> Caller | None:
    """The caller named by Impersonate-* headers, or None when there are none."""
    users = request.headers.getall(IMPERSONATE_USER, [])
    extras = {k for k in request.headers if k.lower().startswith(IMPERSONATE_EXTRA.lower())}
    others = request.headers.getall(IMPERSONATE_GROUP, []) or request.headers.getall(IMPERSONATE_UID, [])
    if not users and not others and not extras:
        return None
    if len(users) != 1 or not users[0]:
        raise ValueError("Impersonate-Group, -Uid and -Extra-* need exactly one Impersonate-User")
    extra: dict[str, list[str]] = {}
    for k in extras:
        extra.setdefault(unquote(k[len(IMPERSONATE_EXTRA):]).lower(), []).extend(request.headers.getall(k))
    return Caller(users[0], request.headers.get(IMPERSONATE_UID, ""),
                  tuple(request.headers.getall(IMPERSONATE_GROUP, [])),
                  tuple(sorted((k, tuple(v)) for k, v in extra.items())))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = typedefs.Middleware


def _certified(request: web.Request) -> Caller | None:
    """The caller named by a client certificate the TLS layer verified (--tls-client-ca), if any."""
    transport = request.transport
    return tls.certificate_caller(transport.get_extra_info("peercert") if transport is not None else None)


def middleware(reviewer: Reviewer | None, settings: AuthSettings, *, client_certs: bool = False) -> Middleware:
    """The aiohttp middleware; ``reviewer`` None is --auth none.

    ``client_certs``: a client certificate verified against --tls-client-ca authenticates
    (CN the user, O the groups, as the API server reads one) when no bearer token is sent.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if reviewer is None:
            request[REQUEST_KEY] = Access()
            return await handler(request)
        token = _bearer(request)
        certified = _certified(request) if client_certs and token is None else None
        if token is None and certified is None:
            return _refuse(request, 401, "a bearer token is required (a service account token, "
                           "e.g. kubectl create token NAME)" + (" or a client certificate" if client_certs else ""))
        try:
            caller = certified if token is None else await reviewer.authenticate(token)
            if caller is None:
                return _refuse(request, 401, "the API server did not accept this token (TokenReview)")
            try:
                named = impersonated(request)
            except ValueError as exc:
                return _refuse(request, 400, str(exc))
            if named is not None:
                if caller.user != settings.peer_user:
                    reviewer.count("impersonation", "refused", "miss")
                    return _refuse(request, 403, f"Impersonate-* headers are accepted only from {settings.peer_user}"
                                   f" (the explainer's own service account), not from {caller.user}")
                caller = named
            if request.path == "/metrics" and not await reviewer.allowed(caller, Attributes("get", path="/metrics")):
                return _refuse(request, 403, f"{caller.user} may not get the non-resource URL /metrics")
            request[REQUEST_KEY] = Access(caller, reviewer, impersonated=named is not None)
            return await handler(request)
        except AuthUnavailable as exc:
            return _refuse(request, 503, str(exc))

    return guard
