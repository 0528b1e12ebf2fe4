"""Query parameters, checked before anything is looked up.

Every bad value becomes a BadRequest whose message says which parameter and
why, so a typo gets a 400 with a reason instead of an empty answer or a 500.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from drop_explainer.explain.traps import TITLES

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_LIMIT = 20
MAX_LIMIT = 500


class BadRequest(ValueError):
    """A request the API refuses, with the reason shown to the caller."""


def namespace(value: str) -> str:
    if len(value) > 63 or not _LABEL.match(value):
        raise BadRequest(f"namespace {value!r} is not a valid namespace name (lowercase DNS label, <= 63 chars)")
    return value


def object_name(value: str, what: str = "pod") -> str:
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise BadRequest(f"{what} name {value!r} is not a valid Kubernetes name (lowercase DNS subdomain)")
    return value


def time_ns(value: str, what: str, now: float | None = None) -> int:
    """RFC 3339, seconds since the epoch, or a duration ago such as 15m, 2h, 7d."""
    now = time.time() if now is None else now
    m = _DURATION.match(value)
    if m:
        return int((now - float(m.group(1)) * _UNITS[m.group(2)]) * 1e9)
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{what}={value!r}: expected RFC 3339 (2026-11-26T02:00:00Z), epoch seconds, "
                         "or a duration ago (30s, 15m, 2h, 7d)") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{what}={value!r}: give a time zone (Z or +01:00)")
    return int(parsed.timestamp() * 1e9)


def limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit={value!r}: expected a whole number from 1 to {MAX_LIMIT}")
    return int(value)


@dataclass(frozen=True, slots=True)
class DropFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    direction: str | None = None
    policy: str | None = None
    trap: str | None = None
    limit: int = DEFAULT_LIMIT
    namespace: str | None = None
    pod: str | None = None
    workload: str | None = None
    """namespace/workload: the drops of every pod of a live pod's workload (set by the route, not a parameter)."""


COMMON = {"format", "scope"}
FILTERS = {"since", "until", "direction", "policy", "trap", "limit"}


def check_known(query: Mapping[str, str], allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(query) - allowed - COMMON)
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(allowed | COMMON))}")


def drop_filter(query: Mapping[str, str], *, extra: frozenset[str] = frozenset(), now: float | None = None,
                **fixed: str | None) -> DropFilter:
    check_known(query, FILTERS | extra)
    direction = query.get("direction")
    if direction is not None and direction not in ("ingress", "egress"):
        raise BadRequest(f"direction={direction!r}: expected ingress or egress")
    trap = query.get("trap")
    if trap is not None and trap not in TITLES:
        raise BadRequest(f"trap={trap!r}: unknown trap; known: {', '.join(sorted(TITLES))}")
    policy = query.get("policy")
    if policy is not None:
        ns, sep, name = policy.partition("/")
        if not sep:
            raise BadRequest(f"policy={policy!r}: expected NAMESPACE/NAME")
        policy = f"{namespace(ns)}/{object_name(name, 'policy')}"
    since = time_ns(query["since"], "since", now) if "since" in query else None
    until = time_ns(query["until"], "until", now) if "until" in query else None
    if since is not None and until is not None and since > until:
        raise BadRequest("since is after until")
    return DropFilter(since, until, direction, policy, trap, limit(query.get("limit")),
                      fixed.get("namespace"), fixed.get("pod"))


def wants_json(query: Mapping[str, str], accept: str) -> bool:
    fmt = query.get("format")
    if fmt is not None:
        if fmt not in ("json", "text"):
            raise BadRequest(f"format={fmt!r}: expected json or text")
        return fmt == "json"
    return "application/json" in accept
