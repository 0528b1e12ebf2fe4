"""A synthetic but realistic cluster state for benchmarks, deterministic per seed.

The mix follows what real clusters carry: most namespaces hold a few
Deployments of web/api/db/cache/worker pods behind Services, many namespaces
have a default-deny, allows come from namespaceSelectors (often on the
kubernetes.io/metadata.name label), podSelectors, AND-ed pairs, ipBlocks with
excepts and named ports, and some namespaces lock egress down except DNS.
A kube-system namespace holds host-network agents and CoreDNS.

Run as a script to write the state somewhere:
    python bench/statesynth.py --out DIR [--pods 5000 --namespaces 500 --policies 1000 --seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Json = dict[str, Any]

TEAMS = [f"team-{i:02d}" for i in range(24)]
ENVS = ("prod", "staging", "dev")
TIERS = ("web", "api", "db", "cache", "worker")
TIER_PORTS: dict[str, list[tuple[str, int, str]]] = {
    "web": [("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
    "api": [("http", 8080, "TCP"), ("grpc", 50051, "TCP"), ("metrics", 9090, "TCP")],
    "db": [("pg", 5432, "TCP"), ("metrics", 9187, "TCP")],
    "cache": [("redis", 6379, "TCP")],
    "worker": [("metrics", 9090, "TCP"), ("statsd", 8125, "UDP")],
}
PODS_PER_NODE = 110


@dataclass(frozen=True)
class Sizes:
    pods: int = 5000
    namespaces: int = 500
    policies: int = 1000
    seed: int = 1


@dataclass
class _App:
    namespace: str
    name: str
    tier: str
    pods: list[Json]


def _meta(name: str, namespace: str | None = None, **extra: Any) -> Json:
    # crc32, not hash(): str hashes change from process to process.
    meta: Json = {"name": name, "resourceVersion": str(zlib.crc32(f"{namespace}/{name}".encode()) % 10**7)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta | extra


def _nodes(count: int) -> list[Json]:
    return [
        {"apiVersion": "v1", "kind": "Node",
         "metadata": _meta(f"node-{i:03d}", labels={"kubernetes.io/hostname": f"node-{i:03d}",
                                                      "topology.kubernetes.io/zone": f"zone-{i % 3}"}),
         "spec": {"podCIDR": f"10.{64 + i // 256}.{i % 256}.0/24", "podCIDRs": [f"10.{64 + i // 256}.{i % 256}.0/24"]},
         "status": {"addresses": [{"type": "InternalIP", "address": f"172.20.{i // 250}.{i % 250 + 1}"},
                                  {"type": "Hostname", "address": f"node-{i:03d}"}]}}
        for i in range(count)
    ]


def _namespaces(rng: random.Random, count: int) -> list[Json]:
    out = [{"apiVersion": "v1", "kind": "Namespace",
            "metadata": _meta("kube-system", labels={"kubernetes.io/metadata.name": "kube-system"})}]
    for i in range(count - 1):
        name = f"ns-{i:04d}"
        labels = {"kubernetes.io/metadata.name": name, "team": rng.choice(TEAMS), "env": rng.choice(ENVS)}
        if rng.random() < 0.2:
            labels["ingress"] = "public"
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, labels=labels)})
    return out


class _PodFactory:
    """Places pods on nodes and hands out addresses from each node's pod CIDR."""

    def __init__(self, rng: random.Random, nodes: list[Json]) -> None:
        self.rng = rng
        self.nodes = nodes
        self.next_host = [10] * len(nodes)
        self.turn = 0

    def pod(self, namespace: str, app: str, tier: str, *, host_network: bool = False) -> Json:
        index = self.turn % len(self.nodes)
        self.turn += 1
        node = self.nodes[index]
        node_ip = node["status"]["addresses"][0]["address"]
        if host_network:
            ip = node_ip
        else:
            base = node["spec"]["podCIDR"].rsplit(".", 1)[0]
            ip = f"{base}.{self.next_host[index]}"
            self.next_host[index] += 1
        rs = f"{app}-{self.rng.getrandbits(32):08x}"[: len(app) + 9]
        name = f"{rs}-{self.rng.getrandbits(24):06x}"
        ports = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in TIER_PORTS[tier]]
        container: Json = {"name": app, "image": f"registry.example/{app}:1.{self.rng.randint(0, 9)}", "ports": ports}
        if ports[0]["protocol"] == "TCP":
            container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": ports[0]["name"]}}
            container["readinessProbe"] = {"tcpSocket": {"port": ports[0]["containerPort"]}}
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(name, namespace, generateName=f"{rs}-",
                              labels={"app": app, "tier": tier, "pod-template-hash": rs[-8:]},
                              ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                                "uid": self._uid(), "controller": True,
                                                "blockOwnerDeletion": True}]),
            "spec": {"nodeName": node["metadata"]["name"], "hostNetwork": host_network, "containers": [container]},
            "status": {"phase": "Running", "hostIP": node_ip, "podIP": ip, "podIPs": [{"ip": ip}]},
        }
        self._kubectl_noise(pod)
        return pod

    def _uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _kubectl_noise(self, pod: Json) -> None:
        """The fields kubectl -o yaml prints that we never read, so file sizes are honest (~4 KB a pod)."""
        started = "2026-11-01T08:00:00Z"
        token = f"kube-api-access-{self.rng.getrandbits(20):05x}"
        container = pod["spec"]["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in container:
                container[probe] |= {"failureThreshold": 3, "periodSeconds": 10, "successThreshold": 1,
                                     "timeoutSeconds": 1}
        container |= {
            "imagePullPolicy": "IfNotPresent", "env": [{"name": "LOG_LEVEL", "value": "info"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": token,
                              "readOnly": True}],
        }
        pod["metadata"] |= {"uid": self._uid(), "creationTimestamp": started}
        pod["spec"] |= {
            "dnsPolicy": "ClusterFirst", "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0, "restartPolicy": "Always", "schedulerName": "default-scheduler", "securityContext": {},
            "serviceAccount": "default", "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
            "tolerations": [{"effect": "NoExecute", "key": f"node.kubernetes.io/{t}", "operator": "Exists",
                             "tolerationSeconds": 300} for t in ("not-ready", "unreachable")],
            "volumes": [{"name": token, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                            "path": "namespace"}]}}]}}],
        }
        pod["status"] |= {
            "conditions": [{"lastProbeTime": None, "lastTransitionTime": started, "status": "True", "type": t}
                           for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                     "PodScheduled")],
            "containerStatuses": [{
                "containerID": f"containerd://{self.rng.getrandbits(256):064x}", "image": container["image"],
                "imageID": f"{container['image']}@sha256:{self.rng.getrandbits(256):064x}", "lastState": {},
                "name": container["name"], "ready": True, "restartCount": 0, "started": True,
                "state": {"running": {"startedAt": started}},
            }],
            "qosClass": "Burstable", "startTime": started,
        }


def _apps(rng: random.Random, namespaces: list[Json], pods: int, factory: _PodFactory) -> list[_App]:
    """kube-system agents first, then Deployments spread over the other namespaces."""
    system = [_App("kube-system", "kube-proxy", "worker", []), _App("kube-system", "coredns", "api", [])]
    for _ in factory.nodes:
        system[0].pods.append(factory.pod("kube-system", "kube-proxy", "worker", host_network=True))
    system[1].pods += [factory.pod("kube-system", "coredns", "api") for _ in range(2)]
    apps: list[_App] = []
    user_ns = [n["metadata"]["name"] for n in namespaces[1:]]
    for ns in user_ns:
        for tier in rng.sample(TIERS, rng.randint(2, 4)):
            apps.append(_App(ns, f"{tier}-{rng.choice(('svc', 'core', 'edge', 'main'))}", tier, []))
    remaining = max(0, pods - sum(len(a.pods) for a in system))
    for i in range(remaining):
        app = apps[i % len(apps)] if i < len(apps) else rng.choice(apps)
        app.pods.append(factory.pod(app.namespace, app.name, app.tier))
    return system + [a for a in apps if a.pods]


def _services(rng: random.Random, apps: list[_App]) -> list[Json]:
    out = []
    for i, app in enumerate(a for a in apps if a.name != "kube-proxy"):
        name, port, proto = TIER_PORTS[app.tier][0]
        out.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(app.name, app.namespace),
            "spec": {"selector": {"app": app.name}, "clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                     "clusterIPs": [f"10.96.{i // 250}.{i % 250 + 1}"],
                     "ports": [{"name": name, "port": 80 if proto == "TCP" else port, "targetPort": name,
                                "protocol": proto}]},
        })
    return out


def _ns_sel(labels: Json) -> Json:
    return {"namespaceSelector": {"matchLabels": labels}}


def _pod_sel(labels: Json) -> Json:
    return {"podSelector": {"matchLabels": labels}}


PolicyMaker = Callable[[random.Random, _App, list[_App]], tuple[str, Json]]


def _default_deny(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    return "default-deny", {"podSelector": {}, "policyTypes": ["Ingress"]}


def _deny_egress_but_dns(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    dns = {"to": [{**_ns_sel({"kubernetes.io/metadata.name": "kube-system"}), **_pod_sel({"app": "coredns"})}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    same_ns: Json = {"to": [{"podSelector": {}}]}
    return "default-deny-egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns, same_ns]}


def _from_namespace(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    other = rng.choice(apps)
    return f"allow-{other.namespace}-to-{app.name}", {
        "podSelector": {"matchLabels": {"app": app.name}},
        "ingress": [{"from": [_ns_sel({"kubernetes.io/metadata.name": other.namespace})],
                     "ports": [{"port": TIER_PORTS[app.tier][0][0], "protocol": TIER_PORTS[app.tier][0][2]}]}],
    }


def _from_team(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    team = rng.choice(TEAMS)
    return f"allow-{team}-{app.name}", {
        "podSelector": {"matchLabels": {"app": app.name}},
        "ingress": [{"from": [{**_ns_sel({"team": team}), **_pod_sel({"tier": "web"})},
                              _ns_sel({"ingress": "public"})]}],
    }


def _same_namespace(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    return "allow-same-namespace", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}


def _tier_chain(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    callers = {"db": ["api", "worker"], "cache": ["api", "web"], "api": ["web"], "web": ["web"], "worker": ["api"]}
    return f"allow-{app.tier}-callers", {
        "podSelector": {"matchLabels": {"tier": app.tier}},
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": callers[app.tier]}]}}],
            "ports": [{"port": name} for name, _, proto in TIER_PORTS[app.tier] if proto == "TCP"]}],
    }


def _monitoring(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    return "allow-monitoring", {
        "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
        "ingress": [{"from": [{**_ns_sel({"team": "team-00"}), "podSelector": {}}],
                     "ports": [{"port": 9000, "endPort": 9200}]}],
    }


def _ip_blocks(rng: random.Random, app: _App, apps: list[_App]) -> tuple[str, Json]:
    return f"allow-lb-{app.name}", {
        "podSelector": {"matchLabels": {"app": app.name}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "172.20.0.0/16", "except": [f"172.20.0.{rng.randint(1, 99)}/32"]}},
                              {"ipBlock": {"cidr": "203.0.113.0/24"}}],
                     "ports": [{"port": 8080}, {"port": 8443, "endPort": 8450}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                        "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
                    "ports": [{"port": 443}]},
                   {"to": [{"namespaceSelector": {}}]}],
    }


POLICY_MIX: list[tuple[PolicyMaker, int]] = [
    (_default_deny, 25), (_from_namespace, 20), (_tier_chain, 15), (_from_team, 10), (_same_namespace, 8),
    (_ip_blocks, 8), (_deny_egress_but_dns, 7), (_monitoring, 7),
]


def _policies(rng: random.Random, apps: list[_App], count: int) -> list[Json]:
    user = [a for a in apps if a.namespace != "kube-system"]
    makers = [m for m, _ in POLICY_MIX]
    weights = [w for _, w in POLICY_MIX]
    seen: set[tuple[str, str]] = set()
    out: list[Json] = []
    collisions = 0
    while len(out) < count:
        app = rng.choice(user)
        name, spec = rng.choices(makers, weights)[0](rng, app, user)
        if (app.namespace, name) in seen:
            # One default-deny per namespace is the norm; number them only when the state is saturated.
            collisions += 1
            if collisions < 20:
                continue
            name = f"{name}-{len(out)}"
        collisions = 0
        seen.add((app.namespace, name))
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": _meta(name, app.namespace, creationTimestamp="2026-11-01T00:00:00Z"),
                    "spec": spec})
    return out


def synthesize(sizes: Sizes) -> list[Json]:
    """Every object of the state, in kubectl's order: namespaces, nodes, pods, services, policies."""
    rng = random.Random(sizes.seed)
    nodes = _nodes(max(3, -(-sizes.pods // PODS_PER_NODE)))
    namespaces = _namespaces(rng, max(2, sizes.namespaces))
    apps = _apps(rng, namespaces, sizes.pods, _PodFactory(rng, nodes))
    pods = [p for a in apps for p in a.pods]
    return [*namespaces, *nodes, *pods, *_services(rng, apps), *_policies(rng, apps, sizes.policies)]


def as_list(objs: list[Json]) -> Json:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objs}


def write_state(objs: list[Json], directory: Path) -> tuple[Path, Path]:
    """The same state as kubectl -o json and -o yaml would write it; returns (json, yaml) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, yaml_path = directory / "json" / "cluster.json", directory / "yaml" / "cluster.yaml"
    json_path.parent.mkdir(exist_ok=True)
    yaml_path.parent.mkdir(exist_ok=True)
    json_path.write_text(json.dumps(as_list(objs), indent=4), encoding="utf-8")
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml_path.write_text(yaml.dump(as_list(objs), Dumper=dumper, sort_keys=False), encoding="utf-8")
    return json_path, yaml_path


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pods", type=int, default=Sizes.pods)
    parser.add_argument("--namespaces", type=int, default=Sizes.namespaces)
    parser.add_argument("--policies", type=int, default=Sizes.policies)
    parser.add_argument("--seed", type=int, default=Sizes.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_size_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="directory for json/cluster.json and yaml/cluster.yaml")
    args = parser.parse_args(argv)
    objs = synthesize(Sizes(args.pods, args.namespaces, args.policies, args.seed))
    for path in write_state(objs, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
