"""A small cluster for the table-driven policy tests, built through the real parser.

Every case adds its own NetworkPolicies (as YAML) to the same pods, so a
case reads as "with this policy, this connection is allowed or not".

  frontend (team=web)         backend (team=payments, env=prod)   ops (no labels of its own)
    web   10.244.1.10           api  10.244.2.20  http=8080/TCP     tool   10.244.1.30
          http=80/TCP                metrics=9090/TCP               v6     fd00:244:1::30
    cache 10.244.1.11                dns=53/UDP                     agent  host network on node-1
          http=8080/UDP         db   10.244.2.21  pg=5432/TCP
                                dual 10.244.2.22 + fd00:244:2::22
  nodes: node-1 172.18.0.11 (10.244.1.0/24, fd00:244:1::/64), node-2 172.18.0.12 (10.244.2.0/24, fd00:244:2::/64)
  namespace "quiet" has no pods.
"""

from __future__ import annotations

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine, Verdict

PODS_YAML = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, apiVersion: v1, metadata: {name: frontend, labels: {team: web}}}
- {kind: Namespace, apiVersion: v1, metadata: {name: backend, labels: {team: payments, env: prod}}}
- {kind: Namespace, apiVersion: v1, metadata: {name: ops}}
- {kind: Namespace, apiVersion: v1, metadata: {name: quiet, labels: {team: none}}}
- kind: Node
  apiVersion: v1
  metadata: {name: node-1}
  spec: {podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]}
  status: {addresses: [{type: InternalIP, address: 172.18.0.11}, {type: Hostname, address: node-1}]}
- kind: Node
  apiVersion: v1
  metadata: {name: node-2}
  spec: {podCIDRs: [10.244.2.0/24, "fd00:244:2::/64"]}
  status: {addresses: [{type: InternalIP, address: 172.18.0.12}]}
- kind: Pod
  apiVersion: v1
  metadata: {name: web, namespace: frontend, labels: {app: web, tier: front}}
  spec: {nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.1.10, hostIP: 172.18.0.11}
- kind: Pod
  apiVersion: v1
  metadata: {name: cache, namespace: frontend, labels: {app: cache}}
  spec: {nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 8080, protocol: UDP}]}]}
  status: {phase: Running, podIP: 10.244.1.11, hostIP: 172.18.0.11}
- kind: Pod
  apiVersion: v1
  metadata: {name: api, namespace: backend, labels: {app: api, tier: back}}
  spec:
    nodeName: node-2
    containers:
    - name: api
      ports: [{name: http, containerPort: 8080, protocol: TCP}, {name: metrics, containerPort: 9090}]
    - name: sidecar
      ports: [{name: dns, containerPort: 53, protocol: UDP}]
  status: {phase: Running, podIP: 10.244.2.20, hostIP: 172.18.0.12}
- kind: Pod
  apiVersion: v1
  metadata: {name: db, namespace: backend, labels: {app: db, tier: back}}
  spec: {nodeName: node-2, containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}
  status: {phase: Running, podIP: 10.244.2.21, hostIP: 172.18.0.12}
- kind: Pod
  apiVersion: v1
  metadata: {name: dual, namespace: backend, labels: {app: dual}}
  spec: {nodeName: node-2, containers: [{name: c}]}
  status: {phase: Running, podIPs: [{ip: 10.244.2.22}, {ip: "fd00:244:2::22"}], hostIP: 172.18.0.12}
- kind: Pod
  apiVersion: v1
  metadata: {name: tool, namespace: ops, labels: {app: tool}}
  spec: {nodeName: node-1, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.244.1.30, hostIP: 172.18.0.11}
- kind: Pod
  apiVersion: v1
  metadata: {name: v6, namespace: ops, labels: {app: v6}}
  spec: {nodeName: node-1, containers: [{name: c}]}
  status: {phase: Running, podIPs: [{ip: "fd00:244:1::30"}], hostIP: 172.18.0.11}
- kind: Pod
  apiVersion: v1
  metadata: {name: agent, namespace: ops, labels: {app: agent}}
  spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
  status: {phase: Running, podIP: 172.18.0.11, hostIP: 172.18.0.11}
"""


def netpol(namespace: str, spec: str, name: str = "p") -> str:
    """One NetworkPolicy document; ``spec`` is YAML (flow style is handiest)."""
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )


def state_with(*policies: str) -> ClusterState:
    """The pods above plus these NetworkPolicy documents, read by the real loader."""
    objs = parse_documents("pods.yaml", PODS_YAML)
    objs += parse_documents("policies.yaml", "---\n".join(policies))
    return ClusterState.build(objs)


def ask(state: ClusterState, source: str, destination: str, port: int, protocol: str = "TCP") -> Verdict:
    """The engine's verdict for a what-if question, resolved as the CLI resolves it."""
    conn = queries.connection(state, queries.Query(source, destination, port, protocol))
    return Engine(state).evaluate(conn)
