"""Record the list and watch answers that test_watching.py replays.

Why recorded: the replay server must speak exactly what kube-apiserver
writes (field layout, string resourceVersions, BOOKMARK and ERROR lines),
and the surest way is to write down what a real one said.

Run from the repository root (builds or reuses the cached binaries):

    .venv/bin/python tests/unit/cluster/recorded/record.py

It starts a throwaway etcd + kube-apiserver (tests/harness), makes the
changes below and writes, next to this file:

- ``sync/<kind>.list*.json``: the first list (pods in pages of 2);
- ``sync/<kind>.watch.jsonl``: the watch from that list's resourceVersion,
  while each kind's objects are created, updated and deleted, ending with
  the server's BOOKMARK before its timeout;
- ``gap/``: on a server without the watch cache, a pod list and watch, then
  a gap in which one pod is deleted and one created, a compaction, the
  watch from the old resourceVersion (an ERROR event with a 410 Status) and
  the relist; plus the HTTP 410 answer to an expired continue token;
- ``events/``: the answers tests/unit/sinks/test_events.py replays: GET of a
  pod (and of a missing one), POST of an Event (and of the same name again),
  a merge PATCH of its count (and of a missing Event).

Pass scenario names (sync, gap, events) to record only those; the tests pin
the resourceVersions of the current recordings.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))

from kubernetes import client  # noqa: E402

from tests.harness.apiserver import KubeApiServer, build_binaries  # noqa: E402
from tests.harness.kubelet import create_node, create_pod, ensure_namespace, set_node_status  # noqa: E402

PATHS = {
    "namespaces": "/api/v1/namespaces",
    "nodes": "/api/v1/nodes",
    "pods": "/api/v1/pods",
    "services": "/api/v1/services",
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
}
WATCH_S = 8


def get(server: KubeApiServer, path: str, params: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(f"{server.url}{path}?{urllib.parse.urlencode(params)}",
                                 headers={"Authorization": f"Bearer {server.admin_token}"})
    try:
        with urllib.request.urlopen(req, timeout=30, context=server.ssl_context()) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return int(exc.code), body


def save_list(server: KubeApiServer, path: str, out: Path, limit: int = 500) -> str:
    """Save each page as out.json (one page) or out.1.json, out.2.json...; return the list's resourceVersion."""
    pages: list[bytes] = []
    token = ""
    while True:
        params = {"limit": str(limit)} | ({"continue": token} if token else {})
        status, body = get(server, path, params)
        assert status == 200, body
        pages.append(body)
        meta = json.loads(body)["metadata"]
        token = meta.get("continue", "")
        if not token:
            break
    for i, body in enumerate(pages, 1):
        name = f"{out.name}.json" if len(pages) == 1 else f"{out.name}.{i}.json"
        (out.parent / name).write_text(json.dumps(json.loads(body), indent=1) + "\n")
    return str(json.loads(pages[-1])["metadata"]["resourceVersion"])


class Watch(threading.Thread):
    """Read one watch response line by line, exactly as the server wrote it."""

    def __init__(self, server: KubeApiServer, path: str, rv: str, timeout_s: int = WATCH_S) -> None:
        super().__init__(daemon=True)
        self.params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                       "timeoutSeconds": str(timeout_s)}
        self.server, self.path = server, path
        self.lines: list[bytes] = []
        self.started = threading.Event()

    def run(self) -> None:
        query = urllib.parse.urlencode(self.params)
        req = urllib.request.Request(f"{self.server.url}{self.path}?{query}",
                                     headers={"Authorization": f"Bearer {self.server.admin_token}"})
        ctx: ssl.SSLContext = self.server.ssl_context()
        with urllib.request.urlopen(req, timeout=60, context=ctx) as resp:
            self.started.set()
            for line in resp:
                self.lines.append(line.rstrip(b"\n"))

    def save(self, out: Path) -> None:
        out.write_bytes(b"".join(line + b"\n" for line in self.lines))


def seed(core: client.CoreV1Api, net: client.NetworkingV1Api) -> None:
    ensure_namespace(core, "shop", labels={"team": "shop"})
    create_node(core, "node-a", "192.0.2.10", ["10.244.1.0/24"], labels={"topology.kubernetes.io/zone": "a"})
    for name, ip, app in (("web-1", "10.244.1.11", "web"), ("web-2", "10.244.1.12", "web"),
                          ("db-0", "10.244.1.20", "db")):
        create_pod(core, "shop", name, node_name="node-a", pod_ip=ip, host_ip="192.0.2.10", labels={"app": app})
    svc: Any = {"metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    core.create_namespaced_service("shop", svc)
    pol: Any = {"metadata": {"name": "allow-web"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                         "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}}
    net.create_namespaced_network_policy("shop", pol)


def churn(core: client.CoreV1Api, net: client.NetworkingV1Api) -> None:
    """Create, update and delete one object of each kind (and delete one seeded pod and policy)."""
    ensure_namespace(core, "billing", labels={"team": "billing"})
    core.patch_namespace("billing", {"metadata": {"labels": {"tier": "internal"}}})
    core.delete_namespace("billing")
    # No namespace controller here: finalize by hand, as it would after emptying the namespace.
    finalized: Any = {"metadata": {"name": "billing"}, "spec": {"finalizers": []}}
    core.replace_namespace_finalize("billing", finalized)

    create_node(core, "node-b", "192.0.2.11", ["10.244.2.0/24"])
    set_node_status(core, "node-b", "192.0.2.12")
    core.delete_node("node-b")

    create_pod(core, "shop", "web-3", node_name="node-a", pod_ip="10.244.1.13", host_ip="192.0.2.10",
               labels={"app": "web"})
    core.patch_namespaced_pod("web-3", "shop", {"metadata": {"labels": {"app": "web", "version": "v2"}}})
    core.delete_namespaced_pod("web-3", "shop", grace_period_seconds=0)
    core.delete_namespaced_pod("web-1", "shop", grace_period_seconds=0)

    svc: Any = {"metadata": {"name": "db"},
                "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432, "name": "pg"}]}}
    core.create_namespaced_service("shop", svc)
    core.patch_namespaced_service("db", "shop", {"spec": {"ports": [{"port": 5432, "name": "pg",
                                                                    "targetPort": 5433}]}})
    core.delete_namespaced_service("db", "shop")

    deny: Any = {"metadata": {"name": "default-deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    net.create_namespaced_network_policy("shop", deny)
    net.patch_namespaced_network_policy("default-deny", "shop",
                                        {"spec": {"policyTypes": ["Ingress", "Egress"]}})
    net.delete_namespaced_network_policy("allow-web", "shop")


def record_sync(server: KubeApiServer, out: Path) -> None:
    api = server.admin_api_client()
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    seed(core, net)
    watches = []
    for name, path in PATHS.items():
        rv = save_list(server, path, out / name, limit=2 if name == "pods" else 500)
        watches.append((name, Watch(server, path, rv)))
    for _, w in watches:
        w.start()
        w.started.wait(10)
    time.sleep(0.5)
    churn(core, net)
    for name, w in watches:
        w.join(WATCH_S + 20)
        w.save(out / f"{name}.watch.jsonl")
    KubeApiServer.close_api_client(api)


def record_gap(server: KubeApiServer, out: Path) -> None:
    api = server.admin_api_client()
    core = client.CoreV1Api(api)
    ensure_namespace(core, "shop", labels={"team": "shop"})
    create_node(core, "node-a", "192.0.2.10", ["10.244.1.0/24"])
    for name, ip in (("api-1", "10.244.1.31"), ("api-2", "10.244.1.32"), ("api-3", "10.244.1.33")):
        create_pod(core, "shop", name, node_name="node-a", pod_ip=ip, host_ip="192.0.2.10", labels={"app": "api"})
    rv = save_list(server, PATHS["pods"], out / "pods.list-1")
    status, first_page = get(server, PATHS["pods"], {"limit": "1"})
    token = json.loads(first_page)["metadata"]["continue"]
    watch = Watch(server, PATHS["pods"], rv, timeout_s=3)
    watch.start()
    watch.started.wait(10)
    time.sleep(0.5)
    core.patch_namespaced_pod("api-1", "shop", {"metadata": {"labels": {"app": "api", "canary": "true"}}})
    watch.join(30)
    watch.save(out / "pods.watch-1.jsonl")
    # The gap: the watch is down while one pod goes and another comes.
    core.delete_namespaced_pod("api-2", "shop", grace_period_seconds=0)
    create_pod(core, "shop", "api-4", node_name="node-a", pod_ip="10.244.1.34", host_ip="192.0.2.10",
               labels={"app": "api"})
    server.compact_etcd()
    last_rv = json.loads(watch.lines[-1])["object"]["metadata"]["resourceVersion"]
    gone = Watch(server, PATHS["pods"], last_rv, timeout_s=3)
    gone.start()
    gone.join(30)
    gone.save(out / "pods.watch-2.jsonl")
    save_list(server, PATHS["pods"], out / "pods.list-2")
    status, body = get(server, PATHS["pods"], {"limit": "1", "continue": token})
    (out / "pods.continue-expired.json").write_text(json.dumps({"status": status, "body": json.loads(body)},
                                                               indent=1) + "\n")
    KubeApiServer.close_api_client(api)


def call(server: KubeApiServer, method: str, path: str, body: object | None = None,
         content_type: str = "application/json") -> dict[str, Any]:
    """One request; the answer as {"status": ..., "body": ...}."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{server.url}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {server.admin_token}",
                                          "Content-Type": content_type, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30, context=server.ssl_context()) as resp:
            return {"status": int(resp.status), "body": json.loads(resp.read())}
    except urllib.error.HTTPError as exc:
        answer = {"status": int(exc.code), "body": json.loads(exc.read())}
        exc.close()
        return answer


def record_events(server: KubeApiServer, out: Path) -> None:
    api = server.admin_api_client()
    core = client.CoreV1Api(api)
    ensure_namespace(core, "shop", labels={"team": "shop"})
    create_node(core, "node-a", "192.0.2.10", ["10.244.1.0/24"])
    create_pod(core, "shop", "web-2", node_name="node-a", pod_ip="10.244.1.12", host_ip="192.0.2.10",
               labels={"app": "web"})
    KubeApiServer.close_api_client(api)
    pod = call(server, "GET", "/api/v1/namespaces/shop/pods/web-2")
    name = "web-2.5f0c1c9b2e6d4a7e"
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "shop", "annotations": {"drop-explainer/signature": name[6:]}},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-2", "namespace": "shop",
                           "uid": pod["body"]["metadata"]["uid"]},
        "reason": "NetworkPolicyDrop", "type": "Warning",
        "message": "shop/frontend -> shop/web-2 TCP/8080 is denied by shop/default-deny (ingress)",
        "source": {"component": "drop-explainer", "host": "node-a"},
        "firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:05Z", "count": 1,
        "reportingComponent": "drop-explainer", "reportingInstance": "node-a",
    }
    answers = {
        "pod": pod,
        "pod-missing": call(server, "GET", "/api/v1/namespaces/shop/pods/web-9"),
        "create": call(server, "POST", "/api/v1/namespaces/shop/events", event),
        "create-conflict": call(server, "POST", "/api/v1/namespaces/shop/events", event),
        "patch": call(server, "PATCH", f"/api/v1/namespaces/shop/events/{name}",
                      {"count": 7, "lastTimestamp": "2026-01-02T03:04:15Z", "message": event["message"]},
                      "application/merge-patch+json"),
        "patch-missing": call(server, "PATCH", "/api/v1/namespaces/shop/events/web-2.0000000000000000",
                              {"count": 2}, "application/merge-patch+json"),
    }
    for key, answer in answers.items():
        (out / f"{key}.json").write_text(json.dumps(answer, indent=1) + "\n")


SCENARIOS = {"sync": (True, record_sync), "gap": (False, record_gap), "events": (True, record_events)}


def main() -> None:
    bin_dir = build_binaries()
    for name in sys.argv[1:] or list(SCENARIOS):
        watch_cache, record = SCENARIOS[name]
        out = HERE / name
        out.mkdir(exist_ok=True)
        with KubeApiServer(bin_dir, watch_cache=watch_cache) as server:
            record(server, out)


if __name__ == "__main__":
    main()
