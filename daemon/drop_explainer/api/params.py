"""Query parameters, checked before anything is looked up.

Every bad value becomes a BadRequest whose message says which parameter and
why, so a typo gets a 400 with a reason instead of an empty answer or a 500.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from drop_explainer.explain.traps import TITLES

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", re.ASCII)
_NUMBER = r"[0-9]{1,20}(?:\.[0-9]{1,9})?"
_DURATION = re.compile(rf"({_NUMBER})(s|m|h|d)", re.ASCII)
_EPOCH = re.compile(_NUMBER, re.ASCII)
_RFC3339 = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH_0 = datetime(1970, 1, 1, tzinfo=UTC)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_VALUE_CHARS = 64
"""No valid value of a filter is longer; longer ones are refused before any parsing."""
MAX_SECONDS = 10**11
"""Epoch seconds at or above this (year 5138) are taken for a finer unit and refused, saying which."""
TIME_FORMS = ("RFC 3339 (2026-11-26T02:00:00Z), epoch seconds (1764800000, fractions allowed), "
              "or a duration ago (30s, 15m, 2h, 7d)")
DEFAULT_LIMIT = 20
MAX_LIMIT = 500
MAX_PORT = 65535
PORT_NAME_PATTERN = "^(?=[a-z0-9-]{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
"""A named port (IANA_SVC_NAME, as containerPort names): resolved on the destination pod or Service."""
PROTOCOL_PATTERN = "^([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ss][Cc][Tt][Pp])$"
WHATIF_END_CHARS = 63 + 1 + 253
"""NAMESPACE/POD at its longest; an IP address is shorter."""


class BadRequest(ValueError):
    """A request the API refuses, with the reason shown to the caller."""


def namespace(value: str) -> str:
    if len(value) > 63 or not _LABEL.fullmatch(value):
        raise BadRequest(f"namespace {value!r} is not a valid namespace name (lowercase DNS label, <= 63 chars)")
    return value


def object_name(value: str, what: str = "pod") -> str:
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise BadRequest(f"{what} name {value!r} is not a valid Kubernetes name (lowercase DNS subdomain)")
    return value


def _shown(value: str) -> str:
    """The value as echoed in an error: repr, cut so a huge value cannot make a huge answer."""
    return repr(value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "...")


def _in_int64(ns: int, what: str, value: str) -> int:
    if not INT64_MIN <= ns <= INT64_MAX:
        raise BadRequest(f"{what}={_shown(value)}: outside the times this API can represent "
                         "(int64 nanoseconds since the epoch: years 1677 to 2262)")
    return ns


def _decimal_ns(number: str, scale: int) -> int:
    """``number`` (ASCII digits, optional fraction of up to 9 digits) times ``scale`` seconds, exact, in ns."""
    whole, _, frac = number.partition(".")
    return (int(whole) * 10**9 + int(frac.ljust(9, "0") or "0")) * scale


def _finer_unit(seconds: int) -> str:
    for unit, digits, scale in (("nanoseconds", 17, 10**9), ("microseconds", 14, 10**6),
                                ("milliseconds", 11, 10**3)):
        if seconds >= 10**digits:
            return f"{unit} (that would be epoch seconds {seconds // scale})"
    raise AssertionError(seconds)  # pragma: no cover - only called at or above MAX_SECONDS


def time_ns(value: str, what: str, now: float | None = None) -> int:
    """RFC 3339, epoch seconds, or a duration ago such as 15m, 2h, 7d; as int64 nanoseconds since the epoch.

    Only ASCII digits count (Python's float() and int() take other scripts'
    digits, underscores, spaces, inf and nan: all refused here), arithmetic
    is on integers so no value overflows, and a number too large for epoch
    seconds is refused saying which unit it looks like, instead of being read
    as a time thousands of years ahead.
    """
    if len(value) > MAX_VALUE_CHARS:
        raise BadRequest(f"{what}={_shown(value)}: too long; expected {TIME_FORMS}")
    now_ns = time.time_ns() if now is None else int(now * 10**9)
    if m := _DURATION.fullmatch(value):
        return _in_int64(now_ns - _decimal_ns(m.group(1), _UNITS[m.group(2)]), what, value)
    if _EPOCH.fullmatch(value):
        seconds = int(value.partition(".")[0])
        if seconds >= MAX_SECONDS:
            raise BadRequest(f"{what}={_shown(value)}: looks like epoch {_finer_unit(seconds)}; "
                             f"the unit here is seconds: give epoch seconds or RFC 3339 (2026-11-26T02:00:00Z)")
        return _in_int64(_decimal_ns(value, 1), what, value)
    if m := _RFC3339.fullmatch(value):
        return _in_int64(_rfc3339_ns(m, what, value), what, value)
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?", value, re.ASCII):
        raise BadRequest(f"{what}={_shown(value)}: give a time zone (Z or +01:00)")
    raise BadRequest(f"{what}={_shown(value)}: expected {TIME_FORMS}")


def _rfc3339_ns(m: re.Match[str], what: str, value: str) -> int:
    stamp, frac, zone = m.groups()
    try:
        parsed = datetime.fromisoformat(stamp.replace("t", "T") + ("+00:00" if zone in "Zz" else zone))
    except ValueError as exc:
        raise BadRequest(f"{what}={_shown(value)}: not a valid date and time ({exc})") from None
    delta = parsed - _EPOCH_0
    seconds = delta.days * 86400 + delta.seconds
    return seconds * 10**9 + int((frac or "").ljust(9, "0"))


def whole_number(value: str, what: str, low: int, high: int) -> int:
    """A count or port: ASCII digits only, within [low, high]."""
    if len(value) > len(str(high)) + 2 or not re.fullmatch(r"[0-9]+", value, re.ASCII) \
            or not low <= int(value) <= high:
        raise BadRequest(f"{what}={_shown(value)}: expected a whole number from {low} to {high}")
    return int(value)


def whatif_query(query: Mapping[str, str]) -> dict[str, str]:
    """/whatif's own parameters, checked where the shared parser (queries.parse_query) is lenient.

    parse_port takes any Unicode digit and parse_protocol any case mapping
    (str.upper() turns "\u017fctp" into SCTP): the API takes ASCII only.
    """
    check_known(query, {"from", "to", "port", "protocol"})
    asked = {k: v for k, v in query.items() if k not in COMMON}
    if "port" in asked and not re.fullmatch(PORT_NAME_PATTERN.strip("^$"), asked["port"], re.ASCII):
        whole_number(asked["port"], "port", 1, MAX_PORT)
    if "protocol" in asked and not re.fullmatch(PROTOCOL_PATTERN.strip("^$"), asked["protocol"], re.ASCII):
        raise BadRequest(f"protocol={_shown(asked['protocol'])}: expected TCP, UDP or SCTP")
    for end in ("from", "to"):
        if len(asked.get(end, "")) > WHATIF_END_CHARS:
            raise BadRequest(f"{end}={_shown(asked[end])}: too long for NAMESPACE/POD or an IP address")
    return asked


def limit(value: str | None) -> int:
    """Refused above MAX_LIMIT rather than clamped: a client asking for more learns it gets less."""
    if value is None:
        return DEFAULT_LIMIT
    return whole_number(value, "limit", 1, MAX_LIMIT)


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
    """Unknown parameters are refused, not ignored: a typo (sinse=15m) must not silently widen the answer.

    A parameter given twice is refused too: which one counts would be a guess.
    """
    unknown = sorted(set(query) - allowed - COMMON)
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(_shown(u)[1:-1] for u in unknown[:10])}; allowed: "
                         f"{', '.join(sorted(allowed | COMMON))}")
    counts = Counter(key for key, _ in query.items())  # a MultiDict's keys() lists each key once
    repeated = sorted(key for key, n in counts.items() if n > 1)
    if repeated:
        raise BadRequest(f"parameter(s) given more than once: {', '.join(repeated)}")


def choice(query: Mapping[str, str], name: str, allowed: Sequence[str]) -> str | None:
    value = query.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name}={_shown(value)}: expected {' or '.join(allowed)}")
    return value


def policy_ref(value: str) -> str:
    ns, sep, name = value.partition("/")
    if not sep:
        raise BadRequest(f"policy={_shown(value)}: expected NAMESPACE/NAME")
    return f"{namespace(ns)}/{object_name(name, 'policy')}"


def drop_filter(query: Mapping[str, str], *, extra: frozenset[str] = frozenset(), now: float | None = None,
                **fixed: str | None) -> DropFilter:
    check_known(query, FILTERS | extra)
    scope(query)
    direction = choice(query, "direction", ("ingress", "egress"))
    trap = query.get("trap")
    if trap is not None and trap not in TITLES:
        raise BadRequest(f"trap={_shown(trap)}: unknown trap; known: {', '.join(sorted(TITLES))}")
    policy = query.get("policy")
    if policy is not None:
        policy = policy_ref(policy)
    since = time_ns(query["since"], "since", now) if "since" in query else None
    until = time_ns(query["until"], "until", now) if "until" in query else None
    if since is not None and until is not None and since > until:
        raise BadRequest("since is after until")
    return DropFilter(since, until, direction, policy, trap, limit(query.get("limit")),
                      fixed.get("namespace"), fixed.get("pod"))


def scope(query: Mapping[str, str]) -> str:
    """local or cluster (the default), checked on every route that takes it."""
    return choice(query, "scope", ("local", "cluster")) or "cluster"


def wants_json(query: Mapping[str, str], accept: str) -> bool:
    fmt = choice(query, "format", ("json", "text"))
    if fmt is not None:
        return fmt == "json"
    return "application/json" in accept


def answers_json(query: Mapping[str, str], accept: str) -> bool:
    """Whether an error goes out as JSON: as wants_json, but never raising (a bad format= gets text)."""
    fmt = query.get("format")
    if fmt in ("json", "text"):
        return fmt == "json"
    return "application/json" in accept
