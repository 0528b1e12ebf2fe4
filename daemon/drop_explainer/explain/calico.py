"""Calico's side of an explanation: aggregated pod names, and Calico's own attribution.

Goldmane names no pod: a workload is ``<generateName>*`` plus its namespace
and the labels its pods share. ``prefix_subject`` finds those pods in the
state (same namespace; generateName equal to the prefix, or for a state
saved without generateName an owner or name that fits; labels that include
the flow's) and explains with one of them. Replicas of one ReplicaSet have
the same labels, so the NetworkPolicy answer is the same for each; a note
says how many matched and which one stands for them, and warns when their
labels differ after all.

``with_attribution`` compares Calico's deciding policy hit with the engine:

- a Kubernetes NetworkPolicy end-of-tier deny is what the engine models:
  its answer (every isolating policy, the failing clauses, the fix) stands
  exactly as for a Hubble drop; a note says that Calico named only one of
  the isolating policies as the trigger, or that the state does not show
  the one it named.
- any other kind (Calico NetworkPolicy / GlobalNetworkPolicy, AdminNetwork-
  Policy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy, profiles) is
  reported as Calico said it: agreement False with that cause, the rule-
  level reason unavailable, and no fix (a change to a Kubernetes
  NetworkPolicy would not undo a Calico deny; we do not invent one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

from drop_explainer.cluster.objects import Pod
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.model import Agreement, Explanation
from drop_explainer.flows.model import Direction, Flow, PolicyHit, Verdict
from drop_explainer.policy import endpoints
from drop_explainer.policy.endpoints import Subject

KUBERNETES_KIND: Final = "NetworkPolicy"
"""The kind name the normalisers give the networking.k8s.io/v1 NetworkPolicy: the one kind the engine models."""
_SHOWN: Final = 3
_DENIES: Final = ("deny", "end-of-tier-deny")
# What the API server appends to a generateName: five characters of this alphabet.
_SUFFIX: Final = re.compile(r"[bcdfghjklmnpqrstvwxz2456789]{5}")


# --- aggregated pod names ------------------------------------------------------------


def _fits_prefix(pod: Pod, prefix: str) -> bool:
    """For a state without generateName: an owner named like the prefix, or a generated name."""
    if any(f"{o.name}-" == prefix for o in pod.owners):
        return True
    return pod.name.startswith(prefix) and _SUFFIX.fullmatch(pod.name[len(prefix):]) is not None


def matching_pods(state: ClusterState, namespace: str, prefix: str,
                  labels: Mapping[str, str]) -> tuple[tuple[Pod, ...], bool]:
    """The pods Calico's ``<prefix>*`` stands for, and whether their labels include the flow's."""
    pods = state.pods_by_namespace.get(namespace, ())
    found = [p for p in pods if p.generate_name == prefix]
    if not found:
        found = [p for p in pods if p.generate_name is None and _fits_prefix(p, prefix)]
    labelled = [p for p in found if all(p.labels.get(k) == v for k, v in labels.items())]
    # A label the pods no longer carry (a relabel since the bucket) is worth
    # saying, not a reason to forget the pods.
    chosen, labels_agree = (labelled, True) if labelled or not found else (found, False)
    running_first = sorted(chosen, key=lambda p: (p.phase not in (None, "Running") or not p.ips, p.name))
    return tuple(running_first), labels_agree


def prefix_subject(state: ClusterState, namespace: str, prefix: str, labels: Mapping[str, str],
                   notes: list[str]) -> Subject:
    """The subject for Calico's aggregated ``namespace/prefix*``: one representative pod, with a note."""
    name = f"{namespace}/{prefix}*"
    pods, labels_agree = matching_pods(state, namespace, prefix, labels)
    if not pods:
        notes.append(f"Calico reports {name} (pods aggregated by name prefix) and no pod of the state matches it; "
                     "its labels are taken from the flow")
        ghost = Pod(namespace, f"{prefix}*", dict(labels))
        return endpoints.pod_subject(state, ghost)
    rep = pods[0]
    if len(pods) == 1:
        notes.append(f"Calico reports {name} (pods aggregated by name prefix); the one matching pod is {rep.key}")
    else:
        shown = ", ".join(p.name for p in pods[:_SHOWN]) + (", ..." if len(pods) > _SHOWN else "")
        same = all(p.labels == rep.labels for p in pods)
        notes.append(f"Calico reports {name} (pods aggregated by name prefix): {len(pods)} pods of the state match "
                     f"({shown}); explained for {rep.key}, "
                     + ("whose labels the others share" if same else
                        "but their labels differ, so the answer may not hold for every one of them"))
    if not labels_agree:
        notes.append(f"the pods of {name} no longer carry all the labels Calico reported "
                     f"({_labels_text(labels)}): the state may be newer than the flow")
    return endpoints.pod_subject(state, rep)


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


# --- Calico's attribution ------------------------------------------------------------


def deciding_hit(hits: Sequence[PolicyHit]) -> PolicyHit | None:
    """The enforced hit that denied: the last enforced deny (rule or end of tier)."""
    return next((h for h in reversed(hits) if not h.staged and h.action in _DENIES), None)


def describe_hit(hit: PolicyHit) -> str:
    """Calico's words for a hit, e.g. ``GlobalNetworkPolicy block-db rule 2 (tier security)``."""
    ref = f"{hit.namespace}/{hit.name}" if hit.namespace else hit.name
    tier = f" (tier {hit.tier})" if hit.tier else ""
    if hit.action.startswith("end-of-tier-"):
        return f"the end-of-tier {hit.action.removeprefix('end-of-tier-')} of tier {hit.tier or '?'}, " \
               f"triggered by {hit.kind} {ref} (no rule of the tier matched)"
    rule = f" rule {hit.rule_index}" if hit.rule_index is not None else ""
    return f"{hit.kind} {ref}{rule}{tier}"


def _direction(flow: Flow) -> str | None:
    return {Direction.INGRESS: "ingress", Direction.EGRESS: "egress"}.get(flow.direction)


def _who(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.is_pod else s.describe()


def with_attribution(expl: Explanation) -> Explanation:
    """Combine Calico's attribution with the engine's answer (a no-op for other sources)."""
    flow = expl.flow
    if flow is None or flow.origin != "calico" or flow.verdict is not Verdict.DROPPED:
        return expl
    notes = list(expl.notes)
    staged = [h for h in flow.attribution if h.staged]
    if staged:
        notes.append("Calico's staged (not enforced) policies evaluated too: "
                     + "; ".join(f"{describe_hit(h)}: {h.action}" for h in staged))
    deciding = deciding_hit(flow.attribution)
    if deciding is None:
        return replace(expl, notes=tuple(notes))
    if deciding.kind == KUBERNETES_KIND:
        return replace(expl, notes=(*notes, *_trigger_notes(expl, flow, deciding)))
    return _not_modelled(expl, flow, deciding, notes)


def _trigger_notes(expl: Explanation, flow: Flow, hit: PolicyHit) -> list[str]:
    direction = _direction(flow)
    if direction is None or hit.trigger is None:
        return []
    side = expl.verdict.ingress if direction == "ingress" else expl.verdict.egress
    keys = [p.key for p in side.policies]
    if side.allowed:
        return []  # the agreement already says the engine disagrees, naming Calico's policy
    if hit.trigger not in keys:
        return [f"Calico names {hit.trigger} as the trigger of the end-of-tier deny, but the state does not show it "
                f"isolating the pod for {direction}: a policy may have changed since"]
    if len(keys) > 1:
        return [f"Calico names only {hit.trigger} as the trigger of the end-of-tier deny; all {len(keys)} policies "
                f"isolating the pod for {direction} are listed"]
    return []


def _not_modelled(expl: Explanation, flow: Flow, hit: PolicyHit, notes: list[str]) -> Explanation:
    causes = [f"Calico attributes the drop to {describe_hit(hit)}: a {hit.kind} is a Calico policy kind the engine "
              "does not model, so the rule-level reason is not available"]
    direction = _direction(flow)
    sides = [("ingress", expl.verdict.ingress), ("egress", expl.verdict.egress)]
    denied = [(d, s) for d, s in sides if not s.allowed and (direction is None or d == direction)]
    if denied:
        causes.append("the Kubernetes NetworkPolicies in the state also deny it ("
                      + "; ".join(f"{d}: {', '.join(p.key for p in s.policies)}" for d, s in denied)
                      + ")")
    c = expl.connection
    what = f"{_who(c.source)} -> {_who(c.destination)} {c.protocol}/{c.port}"
    headline = (f"DROPPED {what}: Calico's {describe_hit(hit)} denies it; this policy kind is not modelled here, "
                "so the rule-level reason is not available")
    return replace(expl, headline=headline, agreement=Agreement(False, tuple(causes)), fixes=(), notes=tuple(notes))
