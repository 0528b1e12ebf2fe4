"""Reading, from a live API server, the objects enforcer detection needs (cluster/enforcer.py).

Kept apart from the pure detection so that a recorded state can be judged
without any client; every list we may not read (403/404) is left empty,
never fatal: detection then says less, and says it is uncertain.
"""

from __future__ import annotations

from typing import Any, Final

from drop_explainer.cluster.enforcer import Inventory, Json, NotEvaluated, crd_groups, meta, not_evaluated

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


ANTREA_LISTS: Final = ("/apis/crd.antrea.io/v1beta1/tiers", "/apis/crd.antrea.io/v1beta1/clusternetworkpolicies",
                       "/apis/crd.antrea.io/v1beta1/networkpolicies")


async def fetch_not_evaluated(client: Any, inventory: Inventory) -> tuple[NotEvaluated, ...]:
    """The Antrea-native policy objects, when Antrea's CRDs are installed; unreadable lists are skipped."""
    from drop_explainer.cluster import kubeapi

    if "crd.antrea.io" not in crd_groups(inventory):
        return ()
    out: list[NotEvaluated] = []
    for path in ANTREA_LISTS:
        try:
            async for page in client.list_pages(path, limit=500):
                kind = {"tiers": "Tier", "clusternetworkpolicies": "ClusterNetworkPolicy"}.get(
                    path.rpartition("/")[2], "NetworkPolicy")
                for item in page.items:
                    entry = not_evaluated({"apiVersion": "crd.antrea.io/v1beta1", "kind": kind, **item})
                    if entry is not None:
                        out.append(entry)
        except kubeapi.KubeApiError:
            continue
    return tuple(out)
