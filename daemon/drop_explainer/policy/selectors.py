"""Label selector semantics, fast for the engine and wordy for explanations.

Both forms read the same requirement list, so "matches" and "why it does not
match" can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from drop_explainer.cluster.objects import LabelSelector, Operator, Requirement


def requirement_holds(req: Requirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(req.key)
    match req.operator:
        case Operator.IN:
            return value is not None and value in req.values
        case Operator.NOT_IN:
            # NotIn also matches objects without the key, as in Kubernetes.
            return value is None or value not in req.values
        case Operator.EXISTS:
            return value is not None
        case Operator.DOES_NOT_EXIST:
            return value is None


@lru_cache(maxsize=65536)
def _requirements(sel: LabelSelector) -> tuple[Requirement, ...]:
    eq = tuple(Requirement(k, Operator.IN, (v,)) for k, v in sel.match_labels)
    return eq + sel.match_expressions


def matches(sel: LabelSelector, labels: Mapping[str, str]) -> bool:
    """True when every matchLabels pair and matchExpressions entry holds."""
    for key, value in sel.match_labels:
        if labels.get(key) != value:
            return False
    return all(requirement_holds(r, labels) for r in sel.match_expressions)


def unmet(sel: LabelSelector, labels: Mapping[str, str]) -> tuple[Requirement, ...]:
    """The requirements these labels fail, in selector order."""
    return tuple(r for r in _requirements(sel) if not requirement_holds(r, labels))


def describe_requirement(req: Requirement) -> str:
    """Kubernetes' own selector syntax: name=frontend, tier in (a,b), !debug."""
    match req.operator:
        case Operator.IN if len(req.values) == 1:
            return f"{req.key}={req.values[0]}"
        case Operator.IN:
            return f"{req.key} in ({','.join(req.values)})"
        case Operator.NOT_IN:
            return f"{req.key} notin ({','.join(req.values)})"
        case Operator.EXISTS:
            return req.key
        case Operator.DOES_NOT_EXIST:
            return f"!{req.key}"


def describe(sel: LabelSelector) -> str:
    if sel.is_empty:
        return "{} (everything)"
    return ",".join(describe_requirement(r) for r in _requirements(sel))
