"""The last gate between any source and the pipeline: a Flow that is safe to explain and to store.

Every normaliser trusts the wire for shapes (protobuf says a port is a
uint32, JSON says anything at all), so values the rest of the daemon
cannot handle arrive here first and are decided once:

- refused (``InvalidFlow``, counted by ``reason`` and skipped): an IP that
  is not a bare address (``not-an-ip``, ``999.999.1.1``, ``1.2.3.4/24``,
  ``10.0.0.1%eth0``), a port outside 1-65535, a time outside int64
  nanoseconds or not after the epoch, negative counts;
- adjusted and counted (``Check.clamped`` / ``Check.truncated``): a time
  more than ``max_future_ns`` ahead of the local clock is set to now (one
  flow stamped a year ahead must not make the resume point ask for the
  future); strings longer than ``max_string`` are cut with a marker; at
  most ``max_labels`` labels per endpoint, ``max_list`` policies or names
  per flow. Memory per flow is then bounded in bytes, whatever the peer
  sends.

Pure and stateless, like the normalisers: callers keep the counters.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from drop_explainer.flows import model

BAD_IP: Final = "bad-ip"
BAD_PORT: Final = "bad-port"
BAD_TIME: Final = "bad-time"
BAD_COUNT: Final = "bad-count"
MARKER: Final = "…[truncated]"
_INT64_MAX: Final = 2**63 - 1
_S: Final = 1_000_000_000


class InvalidFlow(ValueError):
    """A Flow with a value the daemon cannot use; ``reason`` is a counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-flow size caps (the memory and store bounds in bytes follow from them)."""

    max_string: int = 512
    """Characters per name, label key or value (Kubernetes allows 253 for names, 317 for label keys)."""
    max_labels: int = 128
    """Labels kept per endpoint, first in sorted key order."""
    max_list: int = 32
    """Policies (attribution) and destination names kept per flow."""
    max_future_ns: int = 300 * _S
    """A flow time further ahead of the local clock than this is clamped to now."""


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class Check:
    """The checked flow and what had to be changed to make it safe."""

    flow: model.Flow
    clamped: bool = False
    truncated: bool = False


def check(flow: model.Flow, *, limits: Limits = DEFAULT_LIMITS, now_ns: Callable[[], int] = time.time_ns) -> Check:
    """Validate and bound one flow; raises InvalidFlow for what cannot be used."""
    t = flow.time_ns
    if not 0 < t <= _INT64_MAX:
        raise InvalidFlow(BAD_TIME, f"time {t} ns is outside int64 nanoseconds after the epoch")
    for name, port in (("source_port", flow.source_port), ("destination_port", flow.destination_port)):
        if port is not None and not 1 <= port <= 65535:
            raise InvalidFlow(BAD_PORT, f"{name} {port} is outside 1-65535")
    if flow.packets < 0 or flow.connections < 0:
        raise InvalidFlow(BAD_COUNT, f"negative counts: packets {flow.packets}, connections {flow.connections}")
    _check_ip("source", flow.source.ip)
    _check_ip("destination", flow.destination.ip)
    changes: dict[str, object] = {}
    clamped = False
    now = now_ns()
    if t > now + limits.max_future_ns:
        changes["time_ns"], clamped = now, True
    cut = _Cutter(limits)
    source, destination = cut.endpoint(flow.source), cut.endpoint(flow.destination)
    if source is not flow.source:
        changes["source"] = source
    if destination is not flow.destination:
        changes["destination"] = destination
    for field_name in ("node", "drop_reason"):
        value = getattr(flow, field_name)
        if isinstance(value, str) and len(value) > limits.max_string:
            changes[field_name] = cut.text(value)
    if len(flow.attribution) > limits.max_list or any(_long_hit(h, limits) for h in flow.attribution):
        changes["attribution"] = tuple(cut.hit(h) for h in flow.attribution[:limits.max_list])
        cut.truncated = True
    names = flow.destination_names
    if len(names) > limits.max_list or any(len(n) > limits.max_string for n in names):
        changes["destination_names"] = tuple(cut.text(n) for n in names[:limits.max_list])
        cut.truncated = True
    if not changes:
        return Check(flow)
    return Check(replace(flow, **changes), clamped=clamped, truncated=cut.truncated)  # type: ignore[arg-type]


def _check_ip(where: str, ip: str | None) -> None:
    """A bare IPv4 or IPv6 address; no prefix length, no zone, no padding."""
    if ip is None:
        return
    if len(ip) > 45 or "%" in ip or "/" in ip:
        raise InvalidFlow(BAD_IP, f"{where} IP {ip[:64]!r} is not a bare address")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidFlow(BAD_IP, f"{where} IP {ip[:64]!r} is not an address") from None


def _long_hit(hit: model.PolicyHit, limits: Limits) -> bool:
    return any(isinstance(v, str) and len(v) > limits.max_string
               for v in (hit.name, hit.namespace, hit.kind, hit.action, hit.tier, hit.trigger))


class _Cutter:
    """Truncates, remembering whether it had to."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.truncated = False

    def text(self, value: str) -> str:
        if len(value) <= self.limits.max_string:
            return value
        self.truncated = True
        return value[:self.limits.max_string - len(MARKER)] + MARKER

    def opt(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def endpoint(self, ep: model.Endpoint) -> model.Endpoint:
        limits = self.limits
        long_fields = any(v is not None and len(v) > limits.max_string
                          for v in (ep.namespace, ep.pod, ep.workload, ep.pod_prefix))
        if not long_fields and not _labels_too_big(ep.labels, limits):
            return ep
        return replace(ep, namespace=self.opt(ep.namespace), pod=self.opt(ep.pod), workload=self.opt(ep.workload),
                       pod_prefix=self.opt(ep.pod_prefix), labels=self.labels(ep.labels))

    def labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        if not _labels_too_big(labels, self.limits):
            return labels
        self.truncated = True
        kept = sorted(labels.items())[:self.limits.max_labels]
        return {self.text(k): self.text(v) for k, v in kept}

    def hit(self, hit: model.PolicyHit) -> model.PolicyHit:
        return replace(hit, name=self.text(hit.name), namespace=self.opt(hit.namespace), kind=self.text(hit.kind),
                       action=self.text(hit.action), tier=self.opt(hit.tier), trigger=self.opt(hit.trigger))


def _labels_too_big(labels: Mapping[str, str], limits: Limits) -> bool:
    if len(labels) > limits.max_labels:
        return True
    cap = limits.max_string
    return any(len(k) > cap or len(v) > cap for k, v in labels.items())
