"""Reading, from a live API server, the objects enforcer detection needs (cluster/enforcer.py).

Kept apart from the pure detection so that a recorded state can be judged
without any client; every list we may not read (403/404) is left empty,
never fatal: detection then says less, and says it is uncertain.
"""

from __future__ import annotations

from typing import Any, Final

from drop_explainer.cluster.enforcer import Inventory, Json, NotEvaluated, crd_groups, meta, not_evaluated
from drop_explainer.cluster.unevaluated import LISTS as POLICY_LISTS

LISTS: Final = (
    ("daemonsets", "/apis/apps/v1/daemonsets"),
    ("deployments", "/apis/apps/v1/deployments"),
    ("crds", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
    ("nodes", "/api/v1/nodes"),
)
CONFIGMAPS: Final = ("cilium-config", "antrea-config")
"""Read by name only (RBAC: get with resourceNames), in kube-system and the namespaces of the DaemonSets."""


async def fetch_inventory(client: Any, *, page_size: int = 500) -> Inventory:
    """Read the lists detection needs; one that we may not read (403/404) is left empty, not fatal.

    ``client`` is a ``kubeapi.Client`` (typed loosely so this module stays importable without it).
    """
    from drop_explainer.cluster import kubeapi

    lists: dict[str, list[Json]] = {}
    for key, path in LISTS:
        items: list[Json] = []
        try:
            async for page in client.list_pages(path, limit=page_size):
                items.extend(page.items)
        except kubeapi.KubeApiError:
            items = []
        lists[key] = items
    namespaces = sorted({"kube-system"} | {str(meta(ds).get("namespace") or "") for ds in lists["daemonsets"]}
                        - {""})
    configmaps: list[Json] = []
    for name in CONFIGMAPS:
        for ns in namespaces:
            try:
                configmaps.append(await client.request("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}"))
            except kubeapi.KubeApiError:
                continue
            break
    return Inventory(daemonsets=lists["daemonsets"], deployments=lists["deployments"], crds=lists["crds"],
                     nodes=lists["nodes"], configmaps=configmaps)


async def fetch_not_evaluated(client: Any, inventory: Inventory) -> tuple[NotEvaluated, ...]:
    """The policy objects of kinds we do not evaluate, for each group whose CRDs are installed.

    Lists we may not read (403) or that are not served (404) are skipped; so
    is a kind's legacy form when its preferred one answered (Calico: read
    ``projectcalico.org/v3``, served by the Calico API server or native v3
    CRDs, and ``crd.projectcalico.org/v1`` only when v3 is not served, so
    that no policy is counted twice).
    """
    groups = crd_groups(inventory)
    calico = bool({"projectcalico.org", "crd.projectcalico.org"} & groups)
    out: list[NotEvaluated] = []
    served: set[str] = set()
    for group, version, resource, kind in POLICY_LISTS:
        if group == "crd.projectcalico.org" and f"projectcalico.org/{resource}" in served:
            continue
        if group not in groups and not (group == "projectcalico.org" and calico):
            continue
        found = await _list_kind(client, f"/apis/{group}/{version}/{resource}", f"{group}/{version}", kind)
        if found is not None:
            served.add(f"{group}/{resource}")
            out.extend(found)
    return tuple(out)


async def _list_kind(client: Any, path: str, api: str, kind: str) -> list[NotEvaluated] | None:
    from drop_explainer.cluster import kubeapi

    out: list[NotEvaluated] = []
    try:
        async for page in client.list_pages(path, limit=500):
            for item in page.items:
                entry = not_evaluated({**item, "apiVersion": api, "kind": kind})
                if entry is not None:
                    out.append(entry)
    except kubeapi.KubeApiError:
        return None
    return out
