"""One change per policy for all the drops of one answer (`/pods/pod-b/drops`, `explain --flows`).

Each drop's own fix is made from the state as it is, so two fixes to the
same policy, each given as a whole object, undo each other when applied in
turn. The answer therefore also carries the fixes of all its drops planned
together: every edit to one policy merged into one change, checked against
every drop at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from drop_explainer.explain import backends, explaining, fixes
from drop_explainer.explain.model import Explanation, Fix
from drop_explainer.flows import codec
from drop_explainer.flows.codec import BadFlowRecord
from drop_explainer.policy.engine import Engine

MAX_MERGED = 20
"""Drops merged into one plan at most: each is a planning step, on a request; the rest keep their own fixes."""


def _key(e: Explanation) -> tuple[str, str, int, str]:
    c = e.connection
    return (c.source.pod.key if c.source.pod else c.source.ip or "", c.destination.pod.key if c.destination.pod
            else c.destination.ip or "", c.port, c.protocol)


def mergeable(engine: Engine, e: Explanation) -> bool:
    """Has a fix of its own that planning can redo: NetworkPolicy edits and namespace labels only.

    Not a non-policy drop, another policy kind, nothing enforcing; nor a fix
    of another kind of object (a CNI's own policy for node traffic), which
    stays with its drop.
    """
    if not e.fixes or e.verdict.allowed:
        return False
    if not all(o.get("kind") == "NetworkPolicy" and o.get("apiVersion") == "networking.k8s.io/v1"
               for f in e.fixes for o in f.objects):
        return False
    return backends.translate(engine.state, e.connection).problem is None


def for_explanations(engine: Engine, explanations: Iterable[Explanation], *, radius: bool = True) -> tuple[Fix, ...]:
    """The merged fixes, or () when fewer than two of the drops have a fix (their own fix is the answer)."""
    seen: dict[tuple[str, str, int, str], backends.Target] = {}
    for e in explanations:
        if mergeable(engine, e):
            seen.setdefault(_key(e), backends.translate(engine.state, e.connection))
    if len(seen) < 2:
        return ()
    merged = fixes.combine(engine, list(seen.values()), radius=radius)
    # A merged change that the engine does not confirm is no better than the drops' own fixes: none is shown.
    return merged if merged and all(f.verified for f in merged) else ()


def for_drops(engine: Engine, drops: Iterable[Mapping[str, Any]]) -> tuple[tuple[Fix, ...], frozenset[str]]:
    """The merged fixes of stored drops (as the API lists them), planned on the current state, and the ids of
    the drops they cover.

    Answered on a request, so it is kept cheap: each drop's connection is
    read back from its flow (not explained again), candidates are ranked by
    the cheap stand-in and only the merged change's blast radius is counted;
    the same drops on the same snapshot are answered from a small cache. A
    drop whose flow cannot be read back (an older record) is left out; its
    own fix still stands under it.
    """
    targets: dict[str, backends.Target] = {}
    for d in drops:
        if len(targets) >= MAX_MERGED:
            break  # the rest keep their own fixes; the answer says how many the merged change covers
        target = _stored_target(engine, d)
        if target is not None:
            targets[str(d.get("id", ""))] = target
    key = (engine.state.generation, tuple(sorted(targets)))
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    merged: tuple[Fix, ...] = ()
    if len(targets) >= 2:
        merged = fixes.combine(engine, list(targets.values()), radius=True, rank_by_radius=False)
        if not all(f.verified for f in merged):
            merged = ()
    answer = (merged, frozenset(targets) if merged else frozenset())
    with _LOCK:  # requests are answered in worker threads
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = answer
    return answer


_CACHE: dict[tuple[int, tuple[str, ...]], tuple[tuple[Fix, ...], frozenset[str]]] = {}
_CACHE_SIZE = 16
_LOCK = threading.Lock()


def _stored_target(engine: Engine, d: Mapping[str, Any]) -> backends.Target | None:
    """The connection of a stored drop, if its stored explanation has a fix that planning can redo."""
    expl = d.get("explanation", {})
    raw = expl.get("flow")
    stored = expl.get("fixes") or []
    if not isinstance(raw, Mapping) or not stored or "datapath_reason" in expl or "not_enforced" in expl:
        return None
    if not all(o.get("kind") == "NetworkPolicy" and o.get("apiVersion") == "networking.k8s.io/v1"
               for f in stored for o in f.get("objects", [])):
        return None
    try:
        conn, _ = explaining.flow_connection(engine, codec.flow_from_json(raw))
    except (BadFlowRecord, explaining.UnexplainableFlow):
        return None
    if engine.evaluate(conn).allowed:
        return None  # allowed on the current state: nothing left to fix
    target = backends.translate(engine.state, conn)
    return target if target.problem is None else None
