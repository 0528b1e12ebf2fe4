"""When nothing enforces NetworkPolicy, every answer says so first.

On plain flannel (or a kube-proxy-only cluster) a NetworkPolicy is stored
and ignored. An answer of "denied" there is confidently wrong: the
connection flows. So the explanation leads with the fact, and the engine's
verdict is kept, labelled as what the policies *would* do if something
enforced them (useful before moving to an enforcing CNI).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from drop_explainer.cluster.enforcer import Detection, NotEvaluated
from drop_explainer.explain.model import Explanation

WOULD_BE: str = "If policy were enforced: "


MAX_NAMED = 5


def not_evaluated_note(objects: tuple[NotEvaluated, ...]) -> str | None:
    """The note naming the policy objects loaded but not evaluated (Antrea-native), or None."""
    if not objects:
        return None
    named = "; ".join(o.describe() for o in objects[:MAX_NAMED])
    more = f" and {len(objects) - MAX_NAMED} more" if len(objects) > MAX_NAMED else ""
    return (f"not evaluated: {named}{more}. These policy kinds are loaded but not evaluated by the engine; "
            "Antrea applies them before (tiers) or after (baseline) Kubernetes NetworkPolicy, so this answer "
            "covers Kubernetes NetworkPolicy only and is incomplete")


def lead(expl: Explanation, detection: Detection | None, objects: tuple[NotEvaluated, ...] = ()) -> Explanation:
    """The explanation led by the not-enforced note (where nothing enforces), and naming what is not evaluated."""
    unevaluated = not_evaluated_note(objects)
    if unevaluated is not None and unevaluated not in expl.notes:
        expl = replace(expl, notes=(unevaluated, *expl.notes))
    note = detection.not_enforced_note() if detection is not None else None
    if note is None or expl.not_enforced is not None:
        return expl
    return replace(expl, headline=f"NOT ENFORCED: {note} {WOULD_BE}{expl.headline}", not_enforced=note,
                   notes=(note, *expl.notes))


def label_answer(answer: dict[str, Any], detection: Detection | None) -> dict[str, Any]:
    """A what-if answer (JSON) whose ``allowed`` is the truth, the engine's verdict under ``would_be_allowed``."""
    note = detection.not_enforced_note() if detection is not None else None
    if note is None:
        return answer
    return {**answer, "allowed": True, "enforced": False, "would_be_allowed": answer["allowed"],
            "not_enforced": note}
