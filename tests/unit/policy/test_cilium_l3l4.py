"""CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy at L3/L4, one row per semantic point.

Each row cites the section of ``policy-kinds.md`` (the reference, written
from cilium/cilium's ``Documentation/security/policy/*.rst`` and
``pkg/policy``) it checks. Pods and nodes are those of ``world.py``; every
case is asked through the public path (parse_documents, ClusterState.build,
queries.connection, Engine.evaluate).
"""

from __future__ import annotations

import pytest
from world import netpol, state_with

from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import profiles, queries
from drop_explainer.policy.engine import Engine, Verdict


def cnp(namespace: str, spec: str, name: str = "c") -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}"
            f"\nspec: {spec}\n")


def ccnp(spec: str, name: str = "cc") -> str:
    return f"apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def ask(state: ClusterState, src: str, dst: str, port: int, proto: str = "TCP", *, cni: str = "cilium") -> Verdict:
    conn = queries.connection(state, queries.Query(src, dst, port, proto))
    return Engine(state, profiles.parse(cni)).evaluate(conn)


API = "{matchLabels: {app: api}}"
CASES = [
    # --- 1.7 empty lists and {} ---
    ("1.7 CNP ingress: [{}] selects for default deny and allows nothing",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{}}]}}")], "frontend/web", "backend/api", 8080, False),
    ("1.7 KNP ingress: [{}] allows all (the opposite of the CNP)",
     [netpol("backend", "{podSelector: {matchLabels: {app: api}}, ingress: [{}]}")],
     "frontend/web", "backend/api", 8080, True),
    ("1.7 toPorts without an L3 field: any peer on those ports",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{toPorts: [{{ports: [{{port: '8080'}}]}}]}}]}}")],
     "frontend/web", "backend/api", 8080, True),
    ("1.7 toPorts without an L3 field: other ports denied",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{toPorts: [{{ports: [{{port: '8080'}}]}}]}}]}}")],
     "frontend/web", "backend/api", 9090, False),
    ("1.7 toPorts without an L3 field: world too",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{toPorts: [{{ports: [{{port: '8080'}}]}}]}}]}}")],
     "203.0.113.5", "backend/api", 8080, True),
    ("1.7 fromEndpoints: [] selects nothing even with toPorts",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [], "
                     "toPorts: [{ports: [{port: '8080'}]}]}]}")], "backend/db", "backend/api", 8080, False),
    # --- 1.2 implicit namespace ---
    ("1.2 CNP fromEndpoints: [{}] = pods of the policy namespace",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{}}]}}]}}")],
     "backend/db", "backend/api", 8080, True),
    ("1.2 CNP fromEndpoints: [{}] excludes other namespaces",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{}}]}}]}}")],
     "frontend/web", "backend/api", 8080, False),
    ("1.2 CCNP fromEndpoints: [{}] = every pod of the cluster",
     [ccnp(f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{}}]}}]}}")],
     "frontend/web", "backend/api", 8080, True),
    ("1.2 CCNP fromEndpoints: [{}] never includes world",
     [ccnp(f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{}}]}}]}}")],
     "203.0.113.5", "backend/api", 8080, False),
    ("1.2 peer in another namespace by k8s:io.kubernetes.pod.namespace",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{matchLabels: "
                     "{'k8s:io.kubernetes.pod.namespace': frontend, app: web}}]}]}")],
     "frontend/web", "backend/api", 8080, True),
    ("1.2 a CNP subject never leaves its namespace (foreign namespace label dropped)",
     [cnp("backend", "{endpointSelector: {matchLabels: {'k8s:io.kubernetes.pod.namespace': frontend}}, "
                     "ingress: [{}]}")], "ops/tool", "frontend/web", 80, True),
    ("1.2 a CNP subject {} selects its own namespace",
     [cnp("backend", "{endpointSelector: {}, ingress: [{}]}")], "ops/tool", "backend/db", 5432, False),
    # --- 1.3 label sources ---
    ("1.3 namespace labels as io.cilium.k8s.namespace.labels.*",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{matchLabels: "
                     "{'io.cilium.k8s.namespace.labels.team': web}}]}]}")], "frontend/web", "backend/api", 8080, True),
    ("1.3 a namespace label without the prefix is a pod label (trap namespace-label-prefix)",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{matchLabels: "
                     "{team: web, 'k8s:io.kubernetes.pod.namespace': frontend}}]}]}")],
     "frontend/web", "backend/api", 8080, False),
    ("1.3 k8s: prefix matches pod labels",
     [cnp("backend", "{endpointSelector: {matchLabels: {'k8s:app': api}}, ingress: [{fromEndpoints: "
                     "[{matchLabels: {'k8s:app': db}}]}]}")], "backend/db", "backend/api", 8080, True),
    ("1.3 reserved: prefix does not match a pod label of that name",
     [cnp("backend", "{endpointSelector: {matchLabels: {'reserved:app': api}}, ingress: [{}]}")],
     "backend/db", "backend/api", 8080, True),
    ("1.3 any: prefix matches a k8s label",
     [cnp("backend", "{endpointSelector: {matchLabels: {'any:app': api}}, ingress: [{}]}")],
     "backend/db", "backend/api", 8080, False),
    ("1.3 service account label",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{matchLabels: "
                     "{'io.cilium.k8s.policy.serviceaccount': default}}]}]}")], "backend/db", "backend/api", 8080,
     True),
    ("1.3 cluster label",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEndpoints: [{{matchLabels: "
                     "{'io.cilium.k8s.policy.cluster': other}}]}]}")], "backend/db", "backend/api", 8080, False),
    # --- 1.4 entities ---
    ("1.4 fromEntities: [world] admits outside addresses",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [world]}}]}}")],
     "203.0.113.5", "backend/api", 8080, True),
    ("1.4 fromEntities: [world] does not admit pods",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [world]}}]}}")],
     "backend/db", "backend/api", 8080, False),
    ("1.4 fromEntities: [cluster] admits pods",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [cluster]}}]}}")],
     "frontend/web", "backend/api", 8080, True),
    ("1.4 fromEntities: [cluster] admits other nodes",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [cluster]}}]}}")],
     "node/node-1", "backend/api", 8080, True),
    ("1.4 fromEntities: [cluster] does not admit world",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [cluster]}}]}}")],
     "203.0.113.5", "backend/api", 8080, False),
    ("1.4 fromEntities: [host] is the local node only, not remote-node (trap entity-host-vs-remote-node)",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [host]}}]}}")],
     "node/node-1", "backend/api", 8080, False),
    ("1.4 fromEntities: [remote-node] admits another node",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [remote-node]}}]}}")],
     "node/node-1", "backend/api", 8080, True),
    ("1.4 a host-network pod on another node is remote-node",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [remote-node]}}]}}")],
     "ops/agent", "backend/api", 8080, True),
    ("1.4 fromEntities: [all] admits everything",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all]}}]}}")],
     "203.0.113.5", "backend/api", 8080, True),
    ("1.4 toEntities: [world] on egress",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toEntities: [world]}]}")],
     "frontend/web", "198.51.100.7", 443, True),
    ("1.4 toEntities: [world] does not reach pods",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toEntities: [world]}]}")],
     "frontend/web", "backend/api", 8080, False),
    # --- 1.4 CIDR ---
    ("1.4 fromCIDR matches an outside address",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromCIDR: [203.0.113.0/24]}}]}}")],
     "203.0.113.5", "backend/api", 8080, True),
    ("1.4 fromCIDRSet except carves an address out",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromCIDRSet: [{{cidr: 203.0.113.0/24, "
                     "except: [203.0.113.0/28]}]}]}")], "203.0.113.5", "backend/api", 8080, False),
    ("1.4 CIDR rules never match Cilium-managed pods (trap world-vs-cluster-cidr)",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromCIDR: [10.244.0.0/16]}}]}}")],
     "frontend/web", "backend/api", 8080, False),
    ("1.4 CIDR rules do not match nodes by default",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromCIDR: [172.18.0.0/16]}}]}}")],
     "node/node-1", "backend/api", 8080, False),
    ("1.4 toCIDRSet on egress",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toCIDRSet: [{cidr: "
                      "198.51.100.0/24}]}]}")], "frontend/web", "198.51.100.7", 443, True),
    # --- 1.5 ports ---
    ("1.5 endPort range, inside",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: '8000', endPort: 8100, protocol: TCP}]}]}]}")], "frontend/web", "backend/api", 8080,
     True),
    ("1.5 endPort range, outside",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: '8000', endPort: 8050, protocol: TCP}]}]}]}")], "frontend/web", "backend/api", 8080,
     False),
    ("1.5 protocol TCP does not admit UDP",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: '53', protocol: TCP}]}]}]}")], "frontend/web", "backend/api", 53, False, "UDP"),
    ("1.5 protocol ANY admits UDP",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: '53', protocol: ANY}]}]}]}")], "frontend/web", "backend/api", 53, True, "UDP"),
    ("1.5 no protocol = ANY (SCTP included)",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: '53'}]}]}]}")], "frontend/web", "backend/api", 53, True, "SCTP"),
    ("1.5 named port resolved on the destination",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: metrics, protocol: TCP}]}]}]}")], "frontend/web", "backend/api", 9090, True),
    ("1.5 named port does not cover another port",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], toPorts: [{{ports: "
                     "[{port: metrics, protocol: TCP}]}]}]}")], "frontend/web", "backend/api", 8080, False),
    ("1.5 icmps rule does not admit TCP",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all], icmps: [{{fields: "
                     "[{type: 8, family: IPv4}]}]}]}")], "frontend/web", "backend/api", 8080, False),
    # --- 1.8 default deny ---
    ("1.8 enableDefaultDeny.ingress false: only denies restrict",
     [cnp("backend", f"{{endpointSelector: {API}, enableDefaultDeny: {{ingress: false}}, "
                     "ingress: [{fromEntities: [world]}]}")], "frontend/web", "backend/api", 8080, True),
    ("1.8 an ingress-only CNP leaves egress open",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{}}]}}")], "backend/api", "198.51.100.7", 443, True),
    ("1.8 default deny if any policy requests it",
     [cnp("backend", f"{{endpointSelector: {API}, enableDefaultDeny: {{ingress: false}}, "
                     "ingress: [{fromEntities: [world]}]}", "a"),
      cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [host]}}]}}", "b")],
     "frontend/web", "backend/api", 8080, False),
    ("1.8 an ingressDeny-only CNP also puts the pod in ingress default deny (Rule.enableDefaultDeny: 'if a "
     "policy only has Ingress or IngressDeny rules, then the default for ingress is true')",
     [cnp("backend", f"{{endpointSelector: {API}, ingressDeny: [{{fromEntities: [world]}}]}}")],
     "backend/db", "backend/api", 8080, False),
    # --- 1.9 deny precedence and combination with NetworkPolicy ---
    ("1.9 ingressDeny wins over a CNP allow (trap deny-overrides-allow)",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all]}}], "
                     "ingressDeny: [{fromEndpoints: [{matchLabels: "
                     "{'k8s:io.kubernetes.pod.namespace': frontend}}]}]}")],
     "frontend/web", "backend/api", 8080, False),
    ("1.9 ingressDeny wins over a NetworkPolicy allow",
     [netpol("backend", "{podSelector: {}, ingress: [{}]}"),
      cnp("backend", f"{{endpointSelector: {API}, enableDefaultDeny: {{ingress: false}}, "
                     "ingressDeny: [{fromEntities: [cluster]}]}")], "frontend/web", "backend/api", 8080, False),
    ("1.9 a deny on one port leaves another port allowed",
     [cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all]}}], "
                     "ingressDeny: [{fromEntities: [all], toPorts: [{ports: [{port: '9090'}]}]}]}")],
     "frontend/web", "backend/api", 8080, True),
    ("1.9 allows of NetworkPolicy and CNP are one union",
     [netpol("backend", "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: {}}]}]}"),
      cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [world]}}]}}")],
     "backend/db", "backend/api", 8080, True),
    ("1.9 a CNP isolates a pod no NetworkPolicy selects",
     [netpol("backend", "{podSelector: {matchLabels: {app: db}}, ingress: [{}]}"),
      cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [world]}}]}}")],
     "backend/db", "backend/api", 8080, False),
    ("1.9 egressDeny at the source",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egressDeny: [{toEntities: [world]}], "
                      "egress: [{toEntities: [all]}]}")], "frontend/web", "198.51.100.7", 443, False),
    # --- 1.11 both sides ---
    ("1.11 egress of the source and ingress of the destination must both allow",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toEntities: [world]}]}"),
      cnp("backend", f"{{endpointSelector: {API}, ingress: [{{fromEntities: [all]}}]}}")],
     "frontend/web", "backend/api", 8080, False),
    # --- 1.4 toServices ---
    ("1.4 toServices by the Service's selector",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toServices: [{k8sService: "
                      "{serviceName: api, namespace: backend}}]}]}"),
      "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: backend}\n"
      "spec: {selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}\n"], "frontend/web", "backend/api", 8080,
     True),
    ("1.4 toServices does not reach other pods",
     [cnp("frontend", "{endpointSelector: {matchLabels: {app: web}}, egress: [{toServices: [{k8sService: "
                      "{serviceName: api, namespace: backend}}]}]}"),
      "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: backend}\n"
      "spec: {selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}\n"], "frontend/web", "backend/db", 5432,
     False),
]


@pytest.mark.parametrize("row", [pytest.param(c, id=str(c[0])) for c in CASES])
def test_cilium_l3l4(row: tuple[object, ...]) -> None:
    case, docs, src, dst, port, expected = row[:6]
    proto = row[6] if len(row) > 6 else "TCP"
    assert isinstance(docs, list)
    assert isinstance(src, str)
    assert isinstance(dst, str)
    assert isinstance(port, int)
    assert isinstance(proto, str)
    state = state_with(*docs)
    assert not state.refused, state.refused
    verdict = ask(state, src, dst, port, proto)
    assert verdict.allowed is expected, (case, verdict)
    assert not verdict.unsure
