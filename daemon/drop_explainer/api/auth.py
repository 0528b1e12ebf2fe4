"""Who is asking, and may they: TokenReview and SubjectAccessReview against the API server.

Why the API server decides and not we: the answers reveal pods, labels,
IPs and policies, so the same RBAC that guards `kubectl get pods` should
guard them, and admins already know how to grant and revoke it. A token is
checked by TokenReview (the server verifies signature, expiry, audience and
that the service account still exists); each question "may this user get
drops in namespace X" by SubjectAccessReview.

Both answers are cached for a short, configurable time (a revoked binding
takes effect after at most that long) and bounded in number, so a busy
caller costs one review per TTL instead of one per request. Failed reviews
(API server unreachable) are never cached: the caller gets a 503 and asks
again. Every review is counted, hit or miss, in
``drop_explainer_auth_reviews_total``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter

from drop_explainer.cluster import kubeapi
from drop_explainer.settings import AuthSettings

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
MAX_CACHED = 10_000
"""Entries per cache; the least recently used goes first (a token flood cannot grow memory)."""
MAX_CONCURRENT_REVIEWS = 8
"""Reviews in flight at once, so one cluster-wide question over 300 namespaces does not flood the API server."""

V = TypeVar("V")


class AuthUnavailable(Exception):
    """The API server could not answer a review; the request is refused with 503, nothing is cached."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated user as TokenReview reports it (or as a peer's impersonation headers name it)."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: Mapping[str, Any]) -> Caller:
        extra = user.get("extra") or {}
        return cls(str(user.get("username") or ""), str(user.get("uid") or ""),
                   tuple(str(g) for g in user.get("groups") or ()),
                   tuple(sorted((str(k), tuple(str(x) for x in v)) for k, v in extra.items())))

    def spec(self) -> dict[str, Any]:
        """The user part of a SubjectAccessReview spec."""
        out: dict[str, Any] = {"user": self.user, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


@dataclass(frozen=True, slots=True)
class Attributes:
    """What is asked for: a resource in a namespace ("" = all namespaces), or a non-resource path."""

    verb: str
    resource: str = ""
    group: str = ""
    namespace: str = ""
    path: str = ""

    def spec(self) -> dict[str, Any]:
        if self.path:
            return {"nonResourceAttributes": {"path": self.path, "verb": self.verb}}
        return {"resourceAttributes": {"verb": self.verb, "group": self.group, "resource": self.resource,
                                       "namespace": self.namespace}}


@dataclass(slots=True)
class TtlCache(Generic[V]):
    """Answers kept ``ttl_s`` seconds, at most ``max_entries``, least recently used evicted first."""

    ttl_s: float
    max_entries: int = MAX_CACHED
    clock: Callable[[], float] = time.monotonic
    _items: OrderedDict[Hashable, tuple[float, V]] = field(default_factory=OrderedDict)

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        hit = self._items.get(key)
        if hit is None:
            return False, None
        if hit[0] <= self.clock():
            del self._items[key]
            return False, None
        self._items.move_to_end(key)
        return True, hit[1]

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self._items[key] = (self.clock() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class Reviewer:
    """TokenReview and SubjectAccessReview through the daemon's own API client, cached and counted."""

    def __init__(self, client: kubeapi.Client, settings: AuthSettings, registry: CollectorRegistry) -> None:
        self.client = client
        self.settings = settings
        self._tokens: TtlCache[Caller | None] = TtlCache(settings.cache_ttl_s)
        self._access: TtlCache[bool] = TtlCache(settings.cache_ttl_s)
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_REVIEWS)
        self._reviews = Counter("drop_explainer_auth_reviews", "TokenReviews and SubjectAccessReviews asked for, "
                                "by kind, result and whether the cache answered", ["review", "result", "cache"],
                                registry=registry)

    def count(self, review: str, result: str, cache: str) -> None:
        self._reviews.labels(review, result, cache).inc()

    async def authenticate(self, token: str) -> Caller | None:
        """The token's user, or None when the API server says it is not valid (expired, wrong audience...)."""
        key = hashlib.sha256(token.encode()).digest()  # the cache never holds a token itself
        hit, cached = self._tokens.get(key)
        if hit:
            self.count("token", "authenticated" if cached is not None else "rejected", "hit")
            return cached
        spec: dict[str, Any] = {"token": token}
        if self.settings.audiences:
            spec["audiences"] = list(self.settings.audiences)
        status = await self._post("token", TOKEN_REVIEWS, "authentication.k8s.io/v1", "TokenReview", spec)
        caller: Caller | None = None
        if status.get("authenticated") is True:
            caller = Caller.from_review(status.get("user") or {})
            if not caller.user:
                caller = None
        self._tokens.put(key, caller)
        self.count("token", "authenticated" if caller is not None else "rejected", "miss")
        return caller

    async def allowed(self, caller: Caller, attrs: Attributes) -> bool:
        key = (caller, attrs)
        hit, cached = self._access.get(key)
        if hit:
            self.count("access", "allowed" if cached else "denied", "hit")
            return bool(cached)
        status = await self._post("access", ACCESS_REVIEWS, "authorization.k8s.io/v1", "SubjectAccessReview",
                                  caller.spec() | attrs.spec())
        ok = status.get("allowed") is True and status.get("denied") is not True
        self._access.put(key, ok)
        self.count("access", "allowed" if ok else "denied", "miss")
        return ok

    def namespace_attrs(self, namespace: str) -> Attributes:
        s = self.settings
        return Attributes(verb=s.verb, resource=s.resource, group=s.group, namespace=namespace)

    async def _post(self, review: str, path: str, api_version: str, kind: str,
                    spec: Mapping[str, Any]) -> Mapping[str, Any]:
        body = {"apiVersion": api_version, "kind": kind, "spec": dict(spec)}
        async with self._limit:
            try:
                answer = await self.client.request("POST", path, body=body)
            except kubeapi.KubeApiError as exc:
                self.count(review, "error", "miss")
                raise AuthUnavailable(f"the API server did not answer the {kind}: {exc}") from exc
        status = answer.get("status")
        return status if isinstance(status, Mapping) else {}


async def gather_bounded(checks: Mapping[str, Awaitable[bool]]) -> frozenset[str]:
    """The keys whose check said yes (the reviewer bounds how many run at once)."""
    names = list(checks)
    results = await asyncio.gather(*(checks[n] for n in names))
    return frozenset(n for n, ok in zip(names, results, strict=True) if ok)
