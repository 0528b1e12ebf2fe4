"""Stored drops as a person reads them (text) and as programs parse them (JSON).

JSON answers are built first; the text is rendered from the same JSON, so a
peer's answer (which arrives as JSON during fan-out) reads exactly like a
local one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol


class DropRecordLike(Protocol):
    """The fields of a stored drop that the API shows (sinks.store.DropRecord)."""

    @property
    def id(self) -> str: ...
    @property
    def source_workload(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def policies(self) -> Sequence[str]: ...
    @property
    def traps(self) -> Sequence[str]: ...
    @property
    def flows(self) -> int: ...
    @property
    def connections(self) -> int: ...
    @property
    def first_seen_ns(self) -> int: ...
    @property
    def last_seen_ns(self) -> int: ...
    @property
    def nodes(self) -> Sequence[str]: ...
    @property
    def explanation_json(self) -> Mapping[str, Any]: ...
    @property
    def explanation_text(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def pod(self) -> str: ...
    @property
    def workload(self) -> str: ...


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def drop_json(r: DropRecordLike, *, samples: Iterable[Mapping[str, Any]] = (), window: tuple[int, int] | None = None,
              node: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "signature": {"source_workload": r.source_workload, "destination": r.destination, "port": r.port,
                      "protocol": r.protocol, "direction": r.direction, "policies": list(r.policies),
                      "traps": list(r.traps)},
        "workload": r.workload,
        "first_pod": f"{r.namespace}/{r.pod}" if r.namespace else r.pod,
        "flows": r.flows,
        "connections": r.connections,
        "first_seen": iso(r.first_seen_ns),
        "last_seen": iso(r.last_seen_ns),
        "nodes": sorted(r.nodes),
        "reported_by": node,
        "explanation": dict(r.explanation_json),
        "explanation_text": r.explanation_text,
    }
    if window is not None:
        out["window"] = {"flows": window[0], "connections": window[1]}
    sample_list = list(samples)
    if sample_list:
        out["samples"] = sample_list
    return out


def drop_text(d: Mapping[str, Any], *, own_fix: bool = True) -> str:
    sig = d["signature"]
    when = f"first {d['first_seen']}, last {d['last_seen']}"
    how = f"{d['flows']} dropped flow(s), {d['connections']} connection attempt(s)"
    if "window" in d:
        how += f" ({d['window']['flows']} in the asked window)"
    head = (f"=== {sig['source_workload']} -> {sig['destination']} {sig['protocol']}/{sig['port']} "
            f"({sig['direction']}) [id {d['id']}]\n{how}; {when}; nodes: {', '.join(d['nodes']) or '?'}\n")
    text = str(d["explanation_text"])
    cut = text.find("\nFix (")
    if not own_fix and cut >= 0:
        # The fix of this drop alone would undo another's: the merged one at the end replaces it.
        text = text[: cut + 1] + "Fix: see the one change for all drops shown, at the end.\n"
    return head + text


def list_text(title: str, drops: Sequence[Mapping[str, Any]], missing: Sequence[str] = (), *,
              merged: str = "", covered: frozenset[str] = frozenset()) -> str:
    parts = [f"{title}: {len(drops)} kind(s) of drop\n"]
    if missing:
        parts.append(f"WARNING: no answer from node(s) {', '.join(missing)}; their drops are not shown.\n")
    if not drops:
        parts.append("No drops recorded.\n")
    parts += [drop_text(d, own_fix=d["id"] not in covered) for d in drops]
    if merged:
        which = "All drops shown" if len(covered) == len(drops) else f"{len(covered)} of the {len(drops)} drops shown"
        parts.append(f"=== {which}: one change per object admits every one of them\n{merged}")
    return "\n".join(parts)
