"""Policy kinds the engine loads but does not evaluate, and which pods each may select.

The engine evaluates networking.k8s.io/v1 NetworkPolicy, and CiliumNetworkPolicy
and CiliumClusterwideNetworkPolicy through the rule model (policy/kinds/cilium.py). A cluster on
Cilium, Calico or Antrea usually has policies of the CNI's own kinds too,
and AdminNetworkPolicy may be installed: each can drop what NetworkPolicy
allows, or allow what it denies. Reading them as NetworkPolicy is wrong (a
projectcalico.org NetworkPolicy has no ``spec.podSelector``) and ignoring
them makes an answer silently wrong. So every object of these kinds is kept
as a ``NotEvaluated`` record: named, counted, and with the pods it selects,
so that an answer about a pod it may select says so and is marked
incomplete.

Selection is read where it is simple to read exactly (label selectors;
Calico selector expressions made of ``==``, ``!=``, ``in``, ``not in``,
``has()``, ``!has()``, ``all()`` joined by ``&&``); anything else is taken
conservatively as "any pod in the policy's namespace" (namespaced kinds) or
"any pod" (cluster-wide kinds), and said to be a "may select". Which fields
select, per kind, is from the policy-kinds reference (``policy-kinds.md``):
Calico ``selector``
(and ``namespaceSelector`` of a GlobalNetworkPolicy) in Calico's selector
language (section 2.2); AdminNetworkPolicy, BaselineAdminNetworkPolicy and
ClusterNetworkPolicy ``subject`` (section 3); Antrea ``appliedTo``
(section 4). Staged Calico policies are not enforced and are not loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from drop_explainer.cluster import objects as o

Json = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Choice:
    """Pods selected: those matching ``pods`` in a namespace matching ``namespaces`` (None: any namespace)."""

    pods: o.LabelSelector = field(default_factory=o.LabelSelector)
    namespaces: o.LabelSelector | None = None
    namespace: str | None = None
    """One namespace by name (a namespaced policy's own)."""


@dataclass(frozen=True, slots=True)
class NotEvaluated:
    """A policy object of a kind the engine loads but does not evaluate (named in answers)."""

    group: str
    kind: str
    namespace: str | None
    name: str
    detail: str = ""
    """E.g. ``tier securityops, priority 5``."""
    choices: tuple[Choice, ...] | None = ()
    """The pods it selects: any choice matching. () selects no pod (a Tier, a host policy); None is unknown:
    any pod of ``namespace`` (or of the cluster when it is cluster-wide) may be selected."""

    @property
    def kind_name(self) -> str:
        """The kind as answers name it: "CiliumNetworkPolicy", "Calico NetworkPolicy", "Antrea Tier"."""
        return f"{_PREFIX.get(self.group, '')}{self.kind}"

    def describe(self) -> str:
        ref = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind_name} {ref}" + (f" ({self.detail})" if self.detail else "")

    @property
    def exact(self) -> bool:
        """Its selection was read exactly; False means "may select" (conservatively, every pod in scope)."""
        return self.choices is not None


_PREFIX: Final = {"crd.antrea.io": "Antrea ", "projectcalico.org": "Calico ", "crd.projectcalico.org": "Calico "}

KINDS_NOT_EVALUATED: Final = (
    ("projectcalico.org", "NetworkPolicy"), ("projectcalico.org", "GlobalNetworkPolicy"),
    ("crd.projectcalico.org", "NetworkPolicy"), ("crd.projectcalico.org", "GlobalNetworkPolicy"),
    ("policy.networking.k8s.io", "AdminNetworkPolicy"), ("policy.networking.k8s.io", "BaselineAdminNetworkPolicy"),
    ("policy.networking.k8s.io", "ClusterNetworkPolicy"),
    ("crd.antrea.io", "Tier"), ("crd.antrea.io", "ClusterNetworkPolicy"), ("crd.antrea.io", "NetworkPolicy"),
)
"""(API group, kind) of every policy kind kept and named; one row per kind."""

LISTS: Final = (
    ("crd.projectcalico.org", "v1", "networkpolicies", "NetworkPolicy"),
    ("crd.projectcalico.org", "v1", "globalnetworkpolicies", "GlobalNetworkPolicy"),
    ("projectcalico.org", "v3", "networkpolicies", "NetworkPolicy"),
    ("projectcalico.org", "v3", "globalnetworkpolicies", "GlobalNetworkPolicy"),
    ("policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy"),
    ("policy.networking.k8s.io", "v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy"),
    ("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies", "ClusterNetworkPolicy"),
    ("crd.antrea.io", "v1beta1", "tiers", "Tier"),
    ("crd.antrea.io", "v1beta1", "clusternetworkpolicies", "ClusterNetworkPolicy"),
    ("crd.antrea.io", "v1beta1", "networkpolicies", "NetworkPolicy"),
)
"""(group, version, resource, kind) the daemon lists when the group's CRDs are installed (deploy/base/rbac.yaml)."""

_CLUSTER_WIDE: Final = frozenset({"CiliumClusterwideNetworkPolicy", "GlobalNetworkPolicy", "AdminNetworkPolicy",
                                  "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy", "Tier"})


def group_of(obj: Json) -> str:
    """The API group of an object ("" for the core group and for an object without apiVersion)."""
    api = str(obj.get("apiVersion") or "")
    return api.partition("/")[0] if "/" in api else ""


def not_evaluated(obj: Json) -> NotEvaluated | None:
    """The object as a NotEvaluated entry if its (group, kind) is one we keep without evaluating."""
    group, kind = group_of(obj), str(obj.get("kind") or "")
    if (group, kind) not in KINDS_NOT_EVALUATED:
        return None
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    assert isinstance(meta, Mapping)
    assert isinstance(spec, Mapping)
    cluster_wide = kind in _CLUSTER_WIDE
    namespace = None if cluster_wide else str(meta.get("namespace") or "default")
    keys = ("tier", "order", "priority") if group != "cilium.io" else ()
    detail = ", ".join(f"{k} {spec[k]}" for k in keys if k in spec and not isinstance(spec[k], (Mapping, list)))
    try:
        choices = _choices(group, kind, obj, namespace)
    except _Unreadable:
        choices = None
    return NotEvaluated(group, kind, namespace, str(meta.get("name") or ""), detail, choices)


class _Unreadable(Exception):
    """A selection we do not read exactly: taken as every pod in scope."""


def _choices(group: str, kind: str, obj: Json, namespace: str | None) -> tuple[Choice, ...]:
    if kind == "Tier":
        return ()
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise _Unreadable
    if group.endswith("projectcalico.org"):
        return _calico(spec, namespace)
    if group == "policy.networking.k8s.io":
        return _subject(spec.get("subject"))
    return _antrea(spec, namespace)


def _selector(data: object) -> o.LabelSelector:
    """A metav1.LabelSelector read leniently (the API server validated it); raises _Unreadable if odd."""
    if data is None:
        return o.LabelSelector()
    if not isinstance(data, Mapping):
        raise _Unreadable
    labels = data.get("matchLabels") or {}
    exprs = data.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(exprs, list):
        raise _Unreadable
    reqs = []
    for e in exprs:
        if not isinstance(e, Mapping):
            raise _Unreadable
        try:
            reqs.append(o.Requirement(str(e["key"]), o.Operator(str(e["operator"])),
                                      tuple(str(v) for v in e.get("values") or ())))
        except (KeyError, ValueError):
            raise _Unreadable from None
    return o.LabelSelector(tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(reqs))


# --- Calico: selector expressions ---------------------------------------------------------------

_TERM: Final = re.compile(
    r"""^\s*(?:
        (?P<all>all\(\s*\))
      | (?P<neg>!\s*)?has\(\s*(?P<has>[\w./-]+)\s*\)
      | (?P<key>[\w./-]+)\s*(?P<op>==|!=)\s*(?P<q>['"])(?P<value>[^'"]*)(?P=q)
      | (?P<skey>[\w./-]+)\s+(?P<not>not\s+)?in\s*\{(?P<set>[^}]*)\}
    )\s*$""", re.X)
_SET_ITEM: Final = re.compile(r"""^\s*(['"])([^'"]*)\1\s*$""")


def calico_selector(text: str) -> o.LabelSelector:
    """A Calico selector of terms joined by ``&&`` as a LabelSelector; raises _Unreadable for anything else."""
    if not text.strip():
        return o.LabelSelector()
    labels: list[tuple[str, str]] = []
    reqs: list[o.Requirement] = []
    for term in text.split("&&"):
        m = _TERM.match(term)
        if m is None:
            raise _Unreadable
        key = m.group("has") or m.group("key") or m.group("skey")
        if key is not None and (key.startswith(("pcns.", "pcsa.")) or "projectcalico.org/" in key):
            raise _Unreadable  # Calico's own labels (namespace, service account): not read here
        if m.group("all"):
            continue
        if m.group("has"):
            op = o.Operator.DOES_NOT_EXIST if m.group("neg") else o.Operator.EXISTS
            reqs.append(o.Requirement(m.group("has"), op))
        elif m.group("key"):
            if m.group("op") == "==":
                labels.append((m.group("key"), m.group("value")))
            else:  # != is true for an absent label, as NotIn is
                reqs.append(o.Requirement(m.group("key"), o.Operator.NOT_IN, (m.group("value"),)))
        else:
            items = [s for s in m.group("set").split(",") if s.strip()]
            values = []
            for item in items:
                vm = _SET_ITEM.match(item)
                if vm is None:
                    raise _Unreadable
                values.append(vm.group(2))
            if not values:
                raise _Unreadable
            reqs.append(o.Requirement(m.group("skey"), o.Operator.NOT_IN if m.group("not") else o.Operator.IN,
                                      tuple(values)))
    return o.LabelSelector(tuple(labels), tuple(reqs))


def _calico(spec: Json, namespace: str | None) -> tuple[Choice, ...]:
    if spec.get("serviceAccountSelector"):
        raise _Unreadable
    selector = spec.get("selector") or ""
    ns_selector = spec.get("namespaceSelector")
    if not isinstance(selector, str) or not isinstance(ns_selector, (str, type(None))):
        raise _Unreadable
    nss = calico_selector(ns_selector) if namespace is None and ns_selector else None
    return (Choice(calico_selector(selector), nss, namespace),)


# --- AdminNetworkPolicy family: subject; Antrea: appliedTo ---------------------------------------


def _subject(subject: object) -> tuple[Choice, ...]:
    if not isinstance(subject, Mapping):
        raise _Unreadable
    if subject.get("namespaces") is not None:
        return (Choice(o.LabelSelector(), _selector(subject["namespaces"])),)
    pods = subject.get("pods")
    if isinstance(pods, Mapping):
        return (Choice(_selector(pods.get("podSelector")), _selector(pods.get("namespaceSelector"))),)
    raise _Unreadable


def _antrea(spec: Json, namespace: str | None) -> tuple[Choice, ...]:
    applied = spec.get("appliedTo")
    if not isinstance(applied, Sequence) or isinstance(applied, str) or not applied:
        raise _Unreadable  # per-rule appliedTo, or none: not read here
    out = []
    for peer in applied:
        if not isinstance(peer, Mapping) or set(peer) - {"podSelector", "namespaceSelector"}:
            raise _Unreadable  # group, serviceAccount, service, externalEntitySelector...
        pods = _selector(peer.get("podSelector"))
        nss = _selector(peer["namespaceSelector"]) if peer.get("namespaceSelector") is not None else None
        out.append(Choice(pods, nss, namespace))
    return tuple(out)
