"""Talk to the Kubernetes API server: where it is, who we are, and plain JSON over HTTP.

Configuration (kubeconfig, context, in-cluster service account, exec
plugins, token rotation) is read with the official ``kubernetes`` client,
because that is where every corner of kubeconfig is already handled. The
requests themselves go over aiohttp: the list and watch APIs are plain JSON
and JSON lines, so an asyncio client needs no threads, can be cancelled
mid-read, keeps no generated model objects in memory, and can be tested
against a plain HTTP server on loopback.

``list_state()`` is the one-shot read the CLI uses when no ``--state`` is
given: the current kube context, as kubectl users expect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import aiohttp

from drop_explainer.cluster import enforcer, inventory, parsing
from drop_explainer.cluster.errors import ObjectError, StateError
from drop_explainer.cluster.state import ClusterState

if TYPE_CHECKING:
    from kubernetes.client import Configuration

log = logging.getLogger(__name__)

Json = dict[str, Any]
"""One decoded JSON object as the API server sent it."""

_MAX_LINE_BYTES: Final = 32 * 1024 * 1024
"""A watch line is one object; etcd's own limit is 1.5 MiB, so this only stops a runaway stream."""
_DEFAULT_KUBECONFIG: Final = "~/.kube/config"


class KubeConfigError(StateError):
    """No usable kubeconfig or in-cluster service account."""


class KubeApiError(StateError):
    """A request to the API server failed; ``status`` is 0 when no HTTP answer came."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(KubeApiError):
    """410: the resourceVersion (or continue token) is older than etcd keeps; relist."""


class ConnectionLost(KubeApiError):
    """The connection failed or broke mid-response (no HTTP status to report)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "ConnectionLost", message)


@dataclass(frozen=True, slots=True)
class Resource:
    """One collection we read, cluster-wide."""

    kind: str
    path: str
    namespaced: bool


RESOURCES: Final = (
    Resource("Namespace", "/api/v1/namespaces", namespaced=False),
    Resource("Pod", "/api/v1/pods", namespaced=True),
    Resource("Node", "/api/v1/nodes", namespaced=False),
    Resource("Service", "/api/v1/services", namespaced=True),
    Resource("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies", namespaced=True),
    # A Service's ready backends as the datapath uses them (readiness, named targetPorts resolved), and the
    # addresses and port of default/kubernetes (the API server on 6443, not the Service's 443): fixes use them.
    Resource("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices", namespaced=True),
)
CILIUM_RESOURCES: Final = (
    Resource("CiliumNetworkPolicy", "/apis/cilium.io/v2/ciliumnetworkpolicies", namespaced=True),
    Resource("CiliumClusterwideNetworkPolicy", "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies",
             namespaced=False),
)
"""Watched only when the API server serves them (the CRDs are installed): see ``served``."""
RESOURCE_BY_KIND: Final = {r.kind: r for r in (*RESOURCES, *CILIUM_RESOURCES)}


async def served(client: Client, resources: tuple[Resource, ...] = CILIUM_RESOURCES) -> tuple[Resource, ...]:
    """Those of ``resources`` (custom resources) the API server serves; an absent CRD is not an error.

    Read from API discovery (``/apis/GROUP/VERSION``): 404 means the group
    is not served; the kinds missing from its resource list are not either.
    """
    out: list[Resource] = []
    groups: dict[str, set[str] | None] = {}
    for res in resources:
        base, _, name = res.path.rpartition("/")
        if base not in groups:
            try:
                found = await client.request("GET", base)
                groups[base] = {str(r.get("name")) for r in found.get("resources") or () if isinstance(r, Mapping)}
            except KubeApiError:
                groups[base] = None
        names = groups[base]
        if names is not None and name in names:
            out.append(res)
    return tuple(out)
OPTIONAL_FOR_CLI: Final = frozenset({"EndpointSlice"})
"""Kinds the one-shot CLI read goes on without when it may not list them (the daemon's RBAC has them)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What every request needs: base URL, TLS, and the Authorization header.

    ``authorization`` is called before each request; with a kubeconfig or
    service account it runs the ``kubernetes`` client's refresh hook (token
    file rotation, exec plugins), which may block, so it runs in a thread.
    """

    base_url: str
    tls: ssl.SSLContext | bool = True
    """An SSLContext with the cluster CA, True for the system roots, False to skip verification."""
    authorization: Callable[[], str | None] = field(default=lambda: None)
    blocking_auth: bool = False
    """True when ``authorization`` may do I/O (refresh hooks): it then runs in a thread."""
    server_hostname: str | None = None
    """tls-server-name from the kubeconfig: the name to verify instead of the URL's host."""
    proxy: str | None = None

    @classmethod
    def with_token(cls, base_url: str, token: str | None = None, *, tls: ssl.SSLContext | bool = True) -> Endpoint:
        """A fixed bearer token (tests, or a token handed in from elsewhere)."""
        header = f"Bearer {token}" if token else None
        return cls(base_url.rstrip("/"), tls, lambda: header)

    async def headers(self) -> dict[str, str]:
        auth = await asyncio.to_thread(self.authorization) if self.blocking_auth else self.authorization()
        base = {"Accept": "application/json", "User-Agent": "drop-explainer"}
        return base | {"Authorization": auth} if auth else base


def load_endpoint(kubeconfig: str | Path | None = None, context: str | None = None, *,
                  in_cluster_first: bool = False) -> Endpoint:
    """The API server as kubectl would find it; blocking (reads files, may run exec plugins).

    Order: an explicit kubeconfig; else $KUBECONFIG or ~/.kube/config when
    present; else the pod's service account. ``in_cluster_first`` (the
    daemon) tries the service account before the kubeconfig files.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or None
    if path is None and Path(_DEFAULT_KUBECONFIG).expanduser().exists():
        path = _DEFAULT_KUBECONFIG
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    use_cluster = in_cluster and (path is None or (in_cluster_first and not kubeconfig))
    try:
        if use_cluster:
            cast(Any, config).load_incluster_config(client_configuration=cfg)
        elif path is not None:
            cast(Any, config).load_kube_config(config_file=path, context=context, client_configuration=cfg)
        else:
            raise KubeConfigError("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not running in a pod")
        return endpoint_from_configuration(cfg)
    except (config.ConfigException, OSError) as exc:  # OSError: unreadable CA or client certificate
        raise KubeConfigError(f"cannot use the Kubernetes configuration: {exc}") from exc


def endpoint_from_configuration(cfg: Configuration) -> Endpoint:
    """An Endpoint from a loaded ``kubernetes.client.Configuration``."""
    lock = threading.Lock()

    def authorization() -> str | None:
        # The refresh hook mutates the configuration: one caller at a time.
        with lock:
            return cfg.get_api_key_with_prefix("BearerToken", alias="authorization")

    return Endpoint(
        base_url=str(cfg.host).rstrip("/"),
        tls=_ssl_context(cfg),
        authorization=authorization,
        blocking_auth=cfg.refresh_api_key_hook is not None,
        server_hostname=cfg.tls_server_name or None,
        proxy=cfg.proxy or None,
    )


def _ssl_context(cfg: Configuration) -> ssl.SSLContext | bool:
    if not str(cfg.host).startswith("https:"):
        return True  # plain HTTP: aiohttp ignores TLS settings
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cfg.assert_hostname is False:
        ctx.check_hostname = False
    return ctx


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paginated list."""

    items: list[Json]
    resource_version: str


class Client:
    """One aiohttp session towards one API server; use as ``async with``."""

    def __init__(self, endpoint: Endpoint, *, request_timeout_s: float = 60.0,
                 connect_timeout_s: float = 10.0, trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self.endpoint = endpoint
        self._request_timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=connect_timeout_s)
        self._connect_timeout_s = connect_timeout_s
        self._trace_configs = list(trace_configs)
        """aiohttp request tracing (diagnostics, and tests that check every response is closed)."""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(raise_for_status=False, trace_configs=self._trace_configs or None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Client used outside 'async with'")
        return self._session

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Mapping[str, Any] | None = None, content_type: str = "application/json") -> Json:
        """One request, the answer decoded; non-2xx raises KubeApiError (Gone for 410)."""
        headers = await self.endpoint.headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        try:
            async with self.session.request(method, self.endpoint.base_url + path, params=params, data=data,
                                            headers=headers, timeout=self._request_timeout,
                                            **self._tls()) as resp:
                await _raise_for_status(resp)
                return _as_object(await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConnectionLost(f"{method} {path}: {exc!r}") from exc

    async def list_pages(self, path: str, *, limit: int) -> AsyncGenerator[Page, None]:
        """A list, one page at a time, so a 5,000-pod answer is never held whole."""
        token: str | None = None
        while True:
            params = {"limit": str(limit)} | ({"continue": token} if token else {})
            body = await self.request("GET", path, params=params)
            meta = body.get("metadata") or {}
            items = body.get("items") or []
            yield Page(items, str(meta.get("resourceVersion") or ""))
            token = meta.get("continue") or None
            if token is None:
                return

    async def stream(self, path: str, params: Mapping[str, str], *,
                     read_timeout_s: float) -> AsyncGenerator[Json, None]:
        """A watch: one decoded JSON object per line until the server ends the response.

        ``read_timeout_s`` bounds the silence between two reads, so a dead
        connection that never closes (a NAT forgot us) fails instead of hanging.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s, sock_read=read_timeout_s)
        try:
            async with self.session.get(self.endpoint.base_url + path, params=params,
                                        headers=await self.endpoint.headers(), timeout=timeout,
                                        **self._tls()) as resp:
                await _raise_for_status(resp)
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _as_object(line)
                    if len(buffer) > _MAX_LINE_BYTES:
                        raise KubeApiError(resp.status, "LineTooLong", f"watch line over {_MAX_LINE_BYTES} bytes")
                if buffer.strip():
                    raise ConnectionLost(f"GET {path}: stream ended inside a line")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConnectionLost(f"GET {path}: {exc!r}") from exc

    def _tls(self) -> dict[str, Any]:
        ep = self.endpoint
        return {"ssl": ep.tls, "server_hostname": ep.server_hostname, "proxy": ep.proxy}


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 300:
        return
    text = (await resp.read()).decode(errors="replace")
    try:
        status = json.loads(text)
    except json.JSONDecodeError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        raise status_error(status, default_code=resp.status)
    cls = Gone if resp.status == 410 else KubeApiError
    raise cls(resp.status, resp.reason or "", text[:500])


def status_error(status: Mapping[str, Any], *, default_code: int = 500) -> KubeApiError:
    """The exception for a metav1.Status (an error answer or a watch ERROR event)."""
    code = status.get("code")
    code = code if isinstance(code, int) else default_code
    cls = Gone if code == 410 else KubeApiError
    return cls(code, str(status.get("reason") or ""), str(status.get("message") or ""))


def _as_object(raw: bytes) -> Json:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KubeApiError(0, "BadJSON", f"not JSON: {raw[:200]!r}") from exc
    if not isinstance(value, dict):
        raise KubeApiError(0, "BadJSON", f"expected an object, got {type(value).__name__}")
    return value


def object_key(resource: Resource, raw: Mapping[str, Any]) -> str:
    """namespace/name or name: the keys ClusterState uses."""
    meta = raw.get("metadata") or {}
    name = str(meta.get("name") or "")
    return f"{meta.get('namespace') or 'default'}/{name}" if resource.namespaced else name


def parse_object(resource: Resource, raw: Mapping[str, Any]) -> object:
    """Our slim object for one raw item; raises ObjectError naming the field.

    A Cilium policy compiles into the rule model, or into a RefusedPolicy
    when Cilium's validation would reject it (kept, named and counted).
    """
    if resource in CILIUM_RESOURCES:
        from drop_explainer.cluster.loading import compile_cilium

        return compile_cilium({**raw, "apiVersion": raw.get("apiVersion") or "cilium.io/v2", "kind": resource.kind})
    return parsing.PARSERS[resource.kind](raw, f"{resource.kind} {object_key(resource, raw)}")


async def fetch_state(endpoint: Endpoint, *, page_size: int = 500) -> ClusterState:
    """One list of each kind, parsed page by page (the raw JSON is dropped as we go)."""
    objs: list[object] = []
    async with Client(endpoint) as client:
        for resource in (*RESOURCES, *await served(client)):
            try:
                objs.extend(await _list_kind(client, resource, page_size))
            except KubeApiError as exc:
                if resource.kind not in OPTIONAL_FOR_CLI or exc.status not in (403, 404):
                    raise
                # A kubectl user may read Services but not EndpointSlices: answers then take
                # backends from the selector and say so (readiness unknown), never fail.
                log.warning("list_skipped", extra={"kind": resource.kind, "status": exc.status,
                                                   "detail": exc.message})
        found = await inventory.fetch_inventory(client, page_size=page_size)
        antrea = await inventory.fetch_not_evaluated(client, found)
    return with_detection(ClusterState.build(objs), found).with_not_evaluated(antrea)


async def _list_kind(client: Client, resource: Resource, page_size: int) -> list[object]:
    objs: list[object] = []
    async for page in client.list_pages(resource.path, limit=page_size):
        for raw in page.items:
            try:
                objs.append(parse_object(resource, raw))
            except ObjectError as exc:
                # The API server accepted it, so the fault is ours: say so, go on without it.
                log.warning("object_skipped", extra={"object": exc.obj, "field": exc.field, "reason": exc.reason})
    return objs


def with_detection(state: ClusterState, objects: enforcer.Inventory) -> ClusterState:
    """The state with its policy enforcer attached, if there was anything to tell it from (DaemonSets, CRDs)."""
    if not (objects.daemonsets or objects.crds):
        return state
    return state.with_enforcer(enforcer.detect(objects))


def list_state(kubeconfig: str | Path | None = None, context: str | None = None) -> ClusterState:
    """The cluster as it is now, from the current (or named) kube context; for the CLI."""
    return asyncio.run(fetch_state(load_endpoint(kubeconfig, context)))
