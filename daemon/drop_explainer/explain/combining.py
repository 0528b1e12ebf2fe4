"""One change per policy for all the drops of one answer (`/pods/pod-b/drops`, `explain --flows`).

Each drop's own fix is made from the state as it is, so two fixes to the
same policy, each given as a whole object, undo each other when applied in
turn. The answer therefore also carries the fixes of all its drops planned
together: every edit to one policy merged into one change, checked against
every drop at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from drop_explainer.explain import backends, explaining, fixes
from drop_explainer.explain.model import Explanation, Fix
from drop_explainer.flows import codec
from drop_explainer.flows.codec import BadFlowRecord
from drop_explainer.policy.engine import Engine

MAX_MERGED = 100
"""Drops merged into one plan at most: each costs a re-explanation and a ranked plan, on a request."""


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
    """The merged fixes of stored drops (as the API lists them), re-explained on the current state, and the
    ids of the drops they cover.

    A drop whose flow cannot be read back (an older record) is left out of
    the merge; its own fix still stands under it.
    """
    explained: list[tuple[str, Explanation]] = []
    for d in drops:
        if len(explained) >= MAX_MERGED:
            break  # the rest keep their own fixes; the answer says how many the merged change covers
        raw = d.get("explanation", {}).get("flow")
        if not isinstance(raw, Mapping):
            continue
        try:
            flow = codec.flow_from_json(raw)
            explained.append((str(d.get("id", "")), explaining.explain_flow(engine, flow, blast_radius=False)))
        except (BadFlowRecord, explaining.UnexplainableFlow):
            continue
    merged = for_explanations(engine, (e for _, e in explained))
    covered = frozenset(i for i, e in explained if merged and mergeable(engine, e))
    return merged, covered
