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
from drop_explainer.explain import unevaluated
from drop_explainer.explain.model import Explanation

WOULD_BE: str = "If policy were enforced: "


def lead(expl: Explanation, detection: Detection | None, objects: tuple[NotEvaluated, ...] = ()) -> Explanation:
    """The explanation led by the not-enforced note (where nothing enforces), and naming what is not evaluated."""
    expl = unevaluated.mark(expl, objects)
    note = detection.not_enforced_note() if detection is not None else None
    if note is None or expl.not_enforced is not None:
        return expl
    return replace(expl, headline=f"NOT ENFORCED: {note} {WOULD_BE}{expl.headline}", not_enforced=note,
                   notes=(note, *expl.notes))


def label_answer(answer: dict[str, Any], detection: Detection | None) -> dict[str, Any]:
    """A what-if answer (JSON) whose ``allowed`` is the truth, the engine's verdict under ``would_be_allowed``."""
    explanation = answer.get("explanation")
    if isinstance(explanation, dict) and "complete" in explanation:
        answer = {**answer, "complete": explanation["complete"], "not_evaluated": explanation["not_evaluated"]}
    note = detection.not_enforced_note() if detection is not None else None
    if note is None:
        return answer
    return {**answer, "allowed": True, "enforced": False, "would_be_allowed": answer["allowed"],
            "not_enforced": note}
