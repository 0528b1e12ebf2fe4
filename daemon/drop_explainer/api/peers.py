"""Finding the other DaemonSet instances, and asking them.

Each instance holds the drops its node saw. A question about a pod on
another node goes to that node's instance; a cluster-wide question goes to
all of them at once, with a timeout, and the answer says who was silent.
The instances are found in the cluster state the daemon already watches
(its own DaemonSet's pods), so discovery costs no extra API calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
    def __init__(self, settings: PeerSettings, node_name: str, state: Callable[[], ClusterState]) -> None:
        self.settings = settings
        self.node_name = node_name
        self._state = state

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
                out[pod.node_name] = f"http://{host}:{self.settings.port}"
        return out

    async def get(self, session: aiohttp.ClientSession, node: str, path: str,
                  query: Mapping[str, str]) -> tuple[int, Any]:
        """Ask one peer (only for its local answer); raises PeerError when it cannot."""
        base = self.all().get(node)
        if base is None:
            raise PeerError(f"no drop-explainer instance is known on node {node}")
        params = {**query, "scope": "local", "format": "json"}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with session.get(base + path, params=params, timeout=timeout) as resp:
                body = await resp.text()
                return resp.status, json.loads(body)
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
            log.warning("peer_unreachable", extra={"node": node, "error": str(exc) or type(exc).__name__})
            raise PeerError(f"the instance on node {node} did not answer: {exc or type(exc).__name__}") from exc

    async def fan_out(self, session: aiohttp.ClientSession, path: str, query: Mapping[str, str],
                      nodes: Sequence[str] | None = None) -> FanOut:
        targets = list(self.all()) if nodes is None else list(nodes)

        async def one(node: str) -> tuple[str, Any]:
            status, body = await self.get(session, node, path, query)
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
