"""What of one answer a caller may read, when they may see only one side of it.

A drop between two namespaces belongs to both teams: the one whose pod could
not connect and the one whose pod was not reached. Either may see that it
happened (who, to whom, port, counts, times, and whether their own side's
policies allowed it). What belongs to the other side is withheld unless the
caller may see that namespace too: its pods' labels and IPs, its policies,
and anything derived from them -- rule failure messages and fixes name the
peer's labels, the recorded flow and samples carry both ends' labels.

Built by allowlist: a redacted explanation is assembled from the fields
known to be safe, never by deleting the ones known to be sensitive, so a
field added to the explanation later stays hidden until someone decides
otherwise. Redacting twice gives the same answer (a peer has already
redacted for the same caller during fan-out).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
WHY = ("you may not see drops in {ns}: its labels, addresses, policies, rule details and fixes are withheld "
       "(an admin can grant it there, e.g. with a RoleBinding to drop-explainer-reader)")


def end_namespace(subject: Mapping[str, Any] | None, name: str) -> str:
    """Namespace of one end: the explanation's subject when it is a pod, else ``ns/workload`` parsed; "" = no pod."""
    if subject and subject.get("namespace"):
        return str(subject["namespace"])
    ns, sep, _ = name.partition("/")
    return ns if sep and _NAMESPACE.match(ns) else ""


def drop_ends(d: Mapping[str, Any]) -> tuple[str, str]:
    """(source namespace, destination namespace) of a drop answer; "" for an end that is not a pod."""
    sig = d.get("signature") or {}
    conn = (d.get("explanation") or {}).get("connection") or {}
    return (end_namespace(conn.get("source"), str(sig.get("source_workload", ""))),
            end_namespace(conn.get("destination"), str(sig.get("destination", ""))))


def hidden(ends: Collection[str], visible: frozenset[str] | None) -> list[str]:
    """The ends' namespaces the caller may not see (``visible`` None: they see every namespace)."""
    if visible is None:
        return []
    return sorted({ns for ns in ends if ns and ns not in visible})


def _subject(s: Mapping[str, Any], shown: bool) -> dict[str, Any]:
    return dict(s) if shown else {k: s[k] for k in ("kind", "namespace", "pod") if k in s}


def _direction(d: Mapping[str, Any], shown: bool) -> dict[str, Any]:
    if shown:
        return dict(d)
    return {"allowed": d.get("allowed"), "isolated": d.get("isolated"), "withheld": True}


def _trace(t: Mapping[str, Any], masked: list[str]) -> dict[str, Any]:
    """A policy trace of a visible policy whose failure messages may still name the hidden peer's labels."""
    note = f"withheld: it may name labels of {', '.join(masked)}"
    rules = [{"rule": r.get("rule"), "distance": r.get("distance"), "closest": r.get("closest"),
              "failures": [{"clause": f.get("clause"), "message": note} for f in r.get("failures") or ()]}
             for r in t.get("rules") or ()]
    return {k: t[k] for k in ("namespace", "name", "resourceVersion", "direction") if k in t} | {"rules": rules}


def explanation(e: Mapping[str, Any], src_ns: str, dst_ns: str, masked: list[str], *,
                headline: str) -> dict[str, Any]:
    """The parts of an explanation a caller who may not see ``masked`` may read."""
    shown_src, shown_dst = src_ns not in masked, dst_ns not in masked
    conn = e.get("connection") or {}
    out: dict[str, Any] = {
        "schema": e.get("schema"),
        "headline": headline,
        "allowed": e.get("allowed"),
        "connection": {"source": _subject(conn.get("source") or {}, shown_src),
                       "destination": _subject(conn.get("destination") or {}, shown_dst),
                       "port": conn.get("port"), "protocol": conn.get("protocol")},
        # Ingress is decided by the destination's namespace, egress by the source's.
        "ingress": _direction(e.get("ingress") or {}, shown_dst),
        "egress": _direction(e.get("egress") or {}, shown_src),
        "agreement": {"agrees": (e.get("agreement") or {}).get("agrees")},
        "denying": [_trace(t, masked) for t in e.get("denying") or () if t.get("namespace") not in masked],
        "closest": None,
        "traps": [{"id": t.get("id"), "title": t.get("title")} for t in e.get("traps") or ()],
        "fixes": [],
        "notes": [],
        "withheld": {"namespaces": masked, "reason": WHY.format(ns=", ".join(masked))},
    }
    closest = e.get("closest")
    if isinstance(closest, Mapping) and closest.get("namespace") not in masked:
        out["closest"] = dict(closest)
    for key in ("datapath_reason", "not_enforced", "would_be_allowed"):
        if key in e:
            out[key] = e[key]
    return out


def text(e: Mapping[str, Any]) -> str:
    """The text twin of a redacted explanation."""
    lines = [str(e.get("headline", "")), "", f"Withheld: {e['withheld']['reason']}.", ""]
    denying = e.get("denying") or []
    if denying:
        lines.append("Denying policies you may see:")
        for t in denying:
            rules = ", ".join(f"rule {r['rule']}: {r['distance']} failing clause(s)" for r in t["rules"]) or \
                "no rules: it denies everything"
            lines.append(f"  {t.get('namespace')}/{t.get('name')}, {t.get('direction')}: {rules}")
        lines.append("")
    for side in ("ingress", "egress"):
        d = e.get(side) or {}
        if d.get("withheld") and d.get("allowed") is False:
            lines.append(f"The {side} side (a namespace you may not see) denies this connection.")
    for trap in e.get("traps") or ():
        lines.append(f"Known trap: [{trap['id']}] {trap['title']}")
    return "\n".join(lines).rstrip("\n") + "\n"


def redact_drop(d: Mapping[str, Any], visible: frozenset[str] | None) -> dict[str, Any]:
    """A drop answer as this caller may read it (unchanged when they may see both ends)."""
    src_ns, dst_ns = drop_ends(d)
    masked = hidden((src_ns, dst_ns), visible)
    if not masked:
        return dict(d)
    sig = dict(d.get("signature") or {})
    sig["policies"] = [p for p in sig.get("policies") or () if str(p).partition("/")[0] not in masked]
    headline = (f"{sig.get('source_workload')} -> {sig.get('destination')} {sig.get('protocol')}/{sig.get('port')}"
                f" was dropped ({sig.get('direction')})")
    expl = explanation(d.get("explanation") or {}, src_ns, dst_ns, masked, headline=headline)
    out = {k: v for k, v in d.items() if k not in ("samples", "explanation", "explanation_text", "signature")}
    return out | {"signature": sig, "explanation": expl, "explanation_text": text(expl)}


def redact_whatif(data: Mapping[str, Any], visible: frozenset[str] | None) -> dict[str, Any] | None:
    """A what-if answer as this caller may read it; None when they may see neither end."""
    src_ns = end_namespace(data.get("source"), "")
    dst_ns = end_namespace(data.get("destination"), "")
    masked = hidden((src_ns, dst_ns), visible)
    pods = {ns for ns in (src_ns, dst_ns) if ns}
    if visible is not None and (not pods or pods <= set(masked)):
        return None  # neither end is theirs (or neither is a pod: only a cluster-wide caller may ask)
    if not masked:
        return dict(data)
    verdict = "allowed" if data.get("allowed") else "denied"
    headline = f"{data.get('from')} -> {data.get('to')} {data.get('protocol')}/{data.get('port')} would be {verdict}"
    expl = explanation(data.get("explanation") or {}, src_ns, dst_ns, masked, headline=headline)
    out = dict(data)
    out |= {"source": _subject(data.get("source") or {}, src_ns not in masked),
            "destination": _subject(data.get("destination") or {}, dst_ns not in masked),
            "ingress": _direction(data.get("ingress") or {}, dst_ns not in masked),
            "egress": _direction(data.get("egress") or {}, src_ns not in masked),
            "explanation": expl, "withheld": expl["withheld"]}
    return out
