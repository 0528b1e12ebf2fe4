"""Which workload a pod belongs to: the unit a drop is remembered and reported by.

A Deployment's pods get new names at every rollout and every new replica, so
a drop keyed by pod name pages again for the same cause each time. The
workload (Deployment, StatefulSet, DaemonSet, CronJob, or the bare pod
itself) stays the same.

The daemon watches Pods, not ReplicaSets or Jobs, so the last hop of the
ownership chain is taken from the controllers' naming conventions, which
the upstream controllers apply to every object they create:

- a Deployment's ReplicaSet is named ``<deployment>-<pod-template-hash>``
  and its pods carry the label ``pod-template-hash`` with that same hash
  (kubernetes/website ``content/en/docs/concepts/workloads/controllers/deployment.md``:
  "the name of the ReplicaSet is always formatted as
  ``[DEPLOYMENT-NAME]-[HASH]``"). A ReplicaSet whose name does not end in
  its pods' hash label was not made by a Deployment and is its own workload.
- a CronJob's Job is named ``<cronjob>-<scheduled time in minutes since the
  epoch>`` (kubernetes/kubernetes ``pkg/controller/cronjob/utils.go``,
  ``getJobName``; the CronJob docs: the controller "will automatically
  append 11 characters to the job name"). A Job name ending in a dash and
  at least 8 digits (any minute since 1989) is read as a CronJob's; any
  other Job is its own workload.

The inference is marked (``Workload.inferred``) so that it can be said. When
the pod is no longer in the state (a Job that finished, the old pods of a
rollout), the same conventions are applied to the pod's name and the labels
the CNI reported (``pod-template-hash``, ``job-name``,
``statefulset.kubernetes.io/pod-name``), after the workload name the CNI
itself gives (Hubble does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from drop_explainer.cluster import objects as o

_HASH_LABEL: Final = "pod-template-hash"
_JOB_LABELS: Final = ("batch.kubernetes.io/job-name", "job-name")
_STS_POD_LABEL: Final = "statefulset.kubernetes.io/pod-name"
_CRON_SUFFIX: Final = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>\d{8,})$")
_ORDINAL: Final = re.compile(r"^(?P<set>.+)-\d+$")


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    kind: str
    """Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, another owner's kind, or Pod."""
    name: str
    inferred: bool = False
    """The last hop (ReplicaSet -> Deployment, Job -> CronJob) came from naming conventions."""

    @property
    def key(self) -> str:
        """namespace/name: what signatures hold (the kind is left out so that a CNI's name-only workload agrees)."""
        return f"{self.namespace}/{self.name}"

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def deployment_of_replicaset(rs_name: str, labels: Mapping[str, str]) -> str | None:
    """The Deployment that made this ReplicaSet, by its naming convention, else None."""
    h = labels.get(_HASH_LABEL)
    if h and rs_name.endswith(f"-{h}") and len(rs_name) > len(h) + 1:
        return rs_name[: -len(h) - 1]
    return None


def cronjob_of_job(job_name: str) -> str | None:
    """The CronJob that made this Job, by its naming convention, else None."""
    m = _CRON_SUFFIX.match(job_name)
    return m.group("cronjob") if m else None


def of_pod(pod: o.Pod) -> Workload:
    """The pod's workload from its ownerReferences (the controller one first), else the pod itself."""
    if not pod.owners:
        return Workload(pod.namespace, "Pod", pod.name)
    owner = next((r for r in pod.owners if r.controller), pod.owners[0])
    if owner.kind == "ReplicaSet":
        deployment = deployment_of_replicaset(owner.name, pod.labels)
        if deployment is not None:
            return Workload(pod.namespace, "Deployment", deployment, inferred=True)
    elif owner.kind == "Job":
        cronjob = cronjob_of_job(owner.name)
        if cronjob is not None:
            return Workload(pod.namespace, "CronJob", cronjob, inferred=True)
    return Workload(pod.namespace, owner.kind, owner.name)


def of_gone_pod(namespace: str, name: str, labels: Mapping[str, str], cni_workload: str | None = None) -> Workload:
    """A pod no longer in the state, from what the flow says of it (its name, its labels, the CNI's workload)."""
    if cni_workload:
        return Workload(namespace, "", cni_workload, inferred=True)
    h = labels.get(_HASH_LABEL)
    if h and f"-{h}-" in name:
        return Workload(namespace, "Deployment", name[: name.rindex(f"-{h}-")], inferred=True)
    job = next((labels[k] for k in _JOB_LABELS if labels.get(k)), None)
    if job is not None:
        cronjob = cronjob_of_job(job)
        return Workload(namespace, "CronJob", cronjob, inferred=True) if cronjob else Workload(namespace, "Job", job)
    ordinal = _ORDINAL.match(name)
    if labels.get(_STS_POD_LABEL) == name and ordinal is not None:
        return Workload(namespace, "StatefulSet", ordinal.group("set"), inferred=True)
    return Workload(namespace, "Pod", name)



def of_prefix(namespace: str, prefix: str, labels: Mapping[str, str], pods: Sequence[o.Pod] = ()) -> Workload | None:
    """Calico's aggregate of the pods of one generateName (``web-5d8f7c9b6-``): their workload, if it can be told.

    From the flow's ``pod-template-hash`` label, else from a pod of the state with that generateName;
    None when neither says (the aggregate stays its own key).
    """
    h = labels.get(_HASH_LABEL)
    if h and prefix.endswith(f"-{h}-") and len(prefix) > len(h) + 2:
        return Workload(namespace, "Deployment", prefix[: -len(h) - 2], inferred=True)
    pod = next((p for p in pods if p.generate_name == prefix), None)
    return of_pod(pod) if pod is not None else None
