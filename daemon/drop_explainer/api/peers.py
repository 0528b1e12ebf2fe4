"""Finding the other DaemonSet instances, and asking them.

Each instance holds the drops its node saw. A question about a pod on
another node goes to that node's instance; a cluster-wide question goes to
all of them at once, with a timeout, and the answer says who was silent.
The instances are found in the cluster state the daemon already watches
(its own DaemonSet's pods), so discovery costs no extra API calls.

With TLS on (--tls-cert) the peers are asked over https, verified against
--tls-peer-ca (or --tls-client-ca) and --tls-peer-server-name, presenting
our own serving pair where the peers check client certificates.

Each request carries the caller (api/guard.py: our own token plus
Impersonate-* headers), so a peer answers only what the caller may see.
Answers are bounded in bytes: one peer's answer is read up to
``--peer-max-bytes`` and refused beyond (that node is then reported
missing), and all answers being read at once, over every fan-out, hold at
most ``--peer-inflight-bytes``: a read reserves the per-peer maximum
before it starts and waits its turn otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from drop_explainer.cluster.state import ClusterState
from drop_explainer.settings import PeerSettings

log = logging.getLogger(__name__)


class PeerError(Exception):
    """A peer did not answer usefully; the message names the node."""


@dataclass(frozen=True, slots=True)
class FanOut:
    answers: dict[str, Any]
    """node -> decoded JSON answer."""
    missing: list[str]
    """Nodes that did not answer in time or answered with an error."""


class Peers:
    def __init__(self, settings: PeerSettings, node_name: str, state: Callable[[], ClusterState], *,
                 tls: Callable[[], ssl.SSLContext] | None = None, server_name: str | None = None) -> None:
        self.settings = settings
        self.tls = tls
        """How to verify a peer over https (its CA, our client pair); None: plaintext or system defaults."""
        self.server_name = server_name
        """The name to verify in a peer's certificate instead of its pod IP."""
        self.node_name = node_name
        self._state = state
        # Each read reserves max_bytes up front: this many reads fit in the in-flight budget.
        self._slots = asyncio.Semaphore(max(1, settings.inflight_bytes // settings.max_bytes))
        self.refused_too_large = 0

    @property
    def distributed(self) -> bool:
        return self.settings.mode == "daemonset"

    def all(self) -> dict[str, str]:
        """node name -> base URL of every other instance."""
        if self.settings.static:
            return {n: u.rstrip("/") for n, u in self.settings.static.items() if n != self.node_name}
        out: dict[str, str] = {}
        for pod in self._state().pods_by_namespace.get(self.settings.namespace, ()):
            if not all(pod.labels.get(k) == v for k, v in self.settings.selector.items()):
                continue
            if pod.node_name and pod.node_name != self.node_name and pod.ips and pod.phase == "Running":
                ip = pod.ips[0]
                host = f"[{ip}]" if ":" in ip else ip
                out[pod.node_name] = f"{self.settings.scheme}://{host}:{self.settings.port}"
        return out

    async def get(self, session: aiohttp.ClientSession, node: str, path: str,
                  query: Mapping[str, str], headers: Sequence[tuple[str, str]] = ()) -> tuple[int, Any]:
        """Ask one peer (only for its local answer); raises PeerError when it cannot."""
        base = self.all().get(node)
        if base is None:
            raise PeerError(f"no drop-explainer instance is known on node {node}")
        params = {**query, "scope": "local", "format": "json"}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            # Waiting for a slot is bounded too: a node not read in time is reported missing.
            async with asyncio.timeout(self.settings.timeout_s * 2):
                await self._slots.acquire()
            try:
                extra: dict[str, Any] = {}
                if base.startswith("https:"):
                    extra = {"ssl": self.tls() if self.tls is not None else True, "server_hostname": self.server_name}
                async with session.get(base + path, params=params, headers=list(headers), timeout=timeout,
                                       **extra) as resp:
                    body = await self._read_capped(resp, node)
                    return resp.status, json.loads(body)
            finally:
                self._slots.release()
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("peer_unreachable", extra={"node": node, "error": str(exc) or type(exc).__name__})
            raise PeerError(f"the instance on node {node} did not answer: {exc or type(exc).__name__}") from exc

    async def _read_capped(self, resp: aiohttp.ClientResponse, node: str) -> str:
        """The body, or PeerError as soon as it passes max_bytes (never buffered beyond it)."""
        limit = self.settings.max_bytes
        if resp.content_length is not None and resp.content_length > limit:
            self.refused_too_large += 1
            raise PeerError(f"the instance on node {node} answered {resp.content_length} bytes, over {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                self.refused_too_large += 1
                raise PeerError(f"the instance on node {node} answered more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks).decode()

    async def fan_out(self, session: aiohttp.ClientSession, path: str, query: Mapping[str, str],
                      nodes: Sequence[str] | None = None, headers: Sequence[tuple[str, str]] = ()) -> FanOut:
        targets = list(self.all()) if nodes is None else list(nodes)

        async def one(node: str) -> tuple[str, Any]:
            status, body = await self.get(session, node, path, query, headers)
            if status != 200:
                raise PeerError(f"node {node} answered {status}")
            return node, body

        results = await asyncio.gather(*(one(n) for n in targets), return_exceptions=True)
        answers: dict[str, Any] = {}
        missing: list[str] = []
        for node, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, PeerError):
                    raise result
                missing.append(node)
            else:
                answers[node] = result[1]
        return FanOut(answers, sorted(missing))
