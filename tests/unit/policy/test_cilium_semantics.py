"""CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy semantics, one table row per documented point.

Each case is written from a Cilium documentation example (cilium/cilium
``Documentation/security/policy/*.rst`` and the ``examples/policies/**`` files
they include, read at the commits of policy-kinds.md section 0 or newer) or,
where the docs have no example, from the reference section that cites the
code; the comment above each case names its source. The same table is asked
of the naive evaluator (``tests/naive_cilium.py``, which must agree now) and of
the product engine through its public what-if path (which evaluates CNPs once
the engine evaluated CiliumNetworkPolicy; every case now runs against it).

The cluster (one per case, plus the case's policies), pods named after the docs' examples:

  default (no labels): frontend role=frontend 10.244.1.10 (service account luke);
    backend role=backend 10.244.2.20 (service account leia; ports http=80/TCP, dns=53/UDP);
    victim role=victim,env=dev 10.244.1.11; myservice app=myService 10.244.1.12; public role=public 10.244.1.13
  ns1 (faction=alliance): leia name=leia 10.244.1.20 (sa leia); rebel-base name=rebel-base 10.244.1.21
  ns2 (faction=empire): luke name=luke 10.244.2.30 (sa luke); frontend2 role=frontend 10.244.2.31;
    backend2 role=backend 10.244.2.32
  ns3 (faction=alliance): han name=han 10.244.2.50
  kube-system: kube-dns k8s-app=kube-dns 10.244.2.40 (dns=53/UDP and TCP); agent, host network on node-2
  nodes: node-1 172.18.0.11 (10.244.1.0/24), node-2 172.18.0.12 (10.244.2.0/24)
  outside: 8.8.8.8, 8.8.4.4, 20.1.1.1, 10.1.2.3, 10.96.0.5, 10.244.1.250 (pod CIDR, no pod)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import profiles, queries
from drop_explainer.policy.engine import Engine
from tests import naive_cilium
from tests.naive_cilium import Settings


def _pod(ns: str, name: str, labels: str, ip: str, node: str, *, sa: str = "default", ports: str = "[]") -> str:
    host_ip = "172.18.0.11" if node == "node-1" else "172.18.0.12"
    return (f"- {{kind: Pod, apiVersion: v1, metadata: {{name: {name}, namespace: {ns}, labels: {labels}}},"
            f" spec: {{nodeName: {node}, serviceAccountName: {sa}, containers: [{{name: c, ports: {ports}}}]}},"
            f" status: {{phase: Running, podIP: {ip}, hostIP: {host_ip}}}}}\n")


CLUSTER_YAML = (
    "apiVersion: v1\nkind: List\nitems:\n"
    "- {kind: Namespace, apiVersion: v1, metadata: {name: default}}\n"
    "- {kind: Namespace, apiVersion: v1, metadata: {name: ns1, labels: {faction: alliance}}}\n"
    "- {kind: Namespace, apiVersion: v1, metadata: {name: ns2, labels: {faction: empire}}}\n"
    "- {kind: Namespace, apiVersion: v1, metadata: {name: ns3, labels: {faction: alliance}}}\n"
    "- {kind: Namespace, apiVersion: v1, metadata: {name: kube-system}}\n"
    "- {kind: Node, apiVersion: v1, metadata: {name: node-1}, spec: {podCIDRs: [10.244.1.0/24]},"
    " status: {addresses: [{type: InternalIP, address: 172.18.0.11}]}}\n"
    "- {kind: Node, apiVersion: v1, metadata: {name: node-2}, spec: {podCIDRs: [10.244.2.0/24]},"
    " status: {addresses: [{type: InternalIP, address: 172.18.0.12}]}}\n"
    + _pod("default", "frontend", "{role: frontend}", "10.244.1.10", "node-1", sa="luke")
    + _pod("default", "backend", "{role: backend}", "10.244.2.20", "node-2", sa="leia",
           ports="[{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]")
    + _pod("default", "victim", "{role: victim, env: dev}", "10.244.1.11", "node-1")
    + _pod("default", "myservice", "{app: myService}", "10.244.1.12", "node-1")
    + _pod("default", "public", "{role: public}", "10.244.1.13", "node-1")
    + _pod("ns1", "leia", "{name: leia}", "10.244.1.20", "node-1", sa="leia")
    + _pod("ns1", "rebel-base", "{name: rebel-base}", "10.244.1.21", "node-1")
    + _pod("ns2", "luke", "{name: luke}", "10.244.2.30", "node-2", sa="luke")
    + _pod("ns2", "frontend2", "{role: frontend}", "10.244.2.31", "node-2")
    + _pod("ns2", "backend2", "{role: backend}", "10.244.2.32", "node-2")
    + _pod("ns3", "han", "{name: han}", "10.244.2.50", "node-2")
    + _pod("kube-system", "kube-dns", "{k8s-app: kube-dns}", "10.244.2.40", "node-2",
           ports="[{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53}]")
    + "- {kind: Pod, apiVersion: v1, metadata: {name: agent, namespace: kube-system, labels: {app: agent}},"
    " spec: {nodeName: node-2, hostNetwork: true, containers: [{name: c}]},"
    " status: {phase: Running, podIP: 172.18.0.12, hostIP: 172.18.0.12}}\n"
)

NODE1, NODE2 = "172.18.0.11", "172.18.0.12"
FE, BE, VICTIM = "default/frontend", "default/backend", "default/victim"
MYSVC, PUBLIC = "default/myservice", "default/public"
LEIA, REBEL, LUKE, FE2, BE2, HAN = "ns1/leia", "ns1/rebel-base", "ns2/luke", "ns2/frontend2", "ns2/backend2", "ns3/han"
DNS, AGENT = "kube-system/kube-dns", "kube-system/agent"


def cnp(spec: str, ns: str = "default", name: str = "p") -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {spec}\n")


def ccnp(spec: str, name: str = "c") -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: {name}}}\n"
            f"spec: {spec}\n")


def knp(spec: str, ns: str = "default", name: str = "k") -> str:
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {spec}\n")


Check = tuple[str, str, int, str, bool]


@dataclass(frozen=True)
class Case:
    id: str
    policies: tuple[str, ...]
    checks: tuple[Check, ...]
    settings: Settings = field(default_factory=Settings)


def t(src: str, dst: str, port: int, allowed: bool, proto: str = "TCP") -> Check:
    return (src, dst, port, proto, allowed)


BACKEND_FROM_FRONTEND_80 = ("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints: "
                            "[{matchLabels: {role: frontend}}], toPorts: [{ports: [{port: '80', protocol: TCP}]}]}]}")

CASES: tuple[Case, ...] = (
    # --- Endpoints based (layer3.rst) ---------------------------------------------------------------
    # layer3.rst "Simple Ingress Allow", examples/policies/l3/simple/l3.yaml; implicit namespace of the
    # subject and of the peer: policy-kinds.md 1.2 (kubernetes.rst "Namespaces").
    Case("l3-simple-ingress-allow", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                         "[{fromEndpoints: [{matchLabels: {role: frontend}}]}]}"),),
         (t(FE, BE, 80, True), t(FE, BE, 53, True, "UDP"), t(MYSVC, BE, 80, False),
          t(FE2, BE, 80, False),  # role=frontend in another namespace: the peer selector has the policy's namespace
          t(FE2, BE2, 80, True),  # role=backend in ns2 is not selected: the subject has the policy's namespace
          t("8.8.8.8", BE, 80, False))),
    # layer3.rst "Egress Allow All Endpoints", examples/policies/l3/egress-allow-all/egress-allow-all.yaml:
    # "to all other endpoints in the same namespace".
    Case("l3-egress-allow-all-same-namespace", (cnp("{endpointSelector: {matchLabels: {role: frontend}}, egress: "
                                                    "[{toEndpoints: [{}]}]}"),),
         (t(FE, BE, 80, True), t(FE, LEIA, 80, False), t(FE, "8.8.8.8", 443, False), t(FE, NODE1, 10250, False),
          t(FE2, BE2, 80, True))),
    # layer3.rst "Simple Egress Deny", examples/policies/l3/egress-deny/egress-deny.yaml.
    Case("l3-egress-deny-over-allow-all", (cnp("{endpointSelector: {matchLabels: {role: frontend}}, egress: "
                                               "[{toEntities: [all]}], egressDeny: [{toEndpoints: "
                                               "[{matchLabels: {role: backend}}]}]}"),),
         (t(FE, BE, 80, False), t(FE, MYSVC, 80, True), t(FE, "8.8.8.8", 443, True), t(FE, BE2, 80, True))),
    # kubernetes.rst "Namespaces", examples/policies/kubernetes/namespace/namespace-policy.yaml.
    Case("k8s-expose-across-namespace", (cnp("{endpointSelector: {matchLabels: {name: leia}}, ingress: "
                                             "[{fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: ns2,"
                                             " name: luke}}]}]}", ns="ns1"),),
         (t(LUKE, LEIA, 80, True), t(FE2, LEIA, 80, False), t(REBEL, LEIA, 80, False))),
    # kubernetes.rst "Namespaces", examples/policies/kubernetes/namespace/isolate-namespaces.yaml (ns1 half).
    Case("k8s-isolate-namespace", (cnp("{endpointSelector: {matchLabels: {}}, ingress: [{fromEndpoints: "
                                       "[{matchLabels: {}}]}]}", ns="ns1"),),
         (t(REBEL, LEIA, 80, True), t(LUKE, LEIA, 80, False), t(NODE2, LEIA, 80, False), t(LUKE, FE2, 80, True))),
    # kubernetes.rst "Namespaces" (kube-dns), examples/policies/kubernetes/namespace/kubedns-policy.yaml.
    Case("k8s-egress-to-kube-dns", (cnp("{endpointSelector: {}, egress: [{toEndpoints: [{matchLabels: "
                                        "{k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}],"
                                        " toPorts: [{ports: [{port: '53', protocol: UDP}]}]}]}"),),
         (t(FE, DNS, 53, True, "UDP"), t(FE, DNS, 53, False), t(FE, BE, 80, False), t(LEIA, BE, 80, True))),
    # kubernetes.rst "Namespaces": a foreign namespace in a CNP's endpointSelector is replaced by the
    # policy's own (policy-kinds.md 1.2, utils.go ParseToCiliumRule).
    Case("cnp-subject-foreign-namespace-removed", (cnp("{endpointSelector: {matchLabels: "
                                                       "{k8s:io.kubernetes.pod.namespace: ns2, role: backend}},"
                                                       " ingress: [{}]}"),),
         (t(FE, BE, 80, False), t(FE2, BE2, 80, True))),
    # kubernetes.rst "Namespace labels", examples/policies/kubernetes/namespace/namespace-labels-policy.yaml
    # (alliance-only, here in ns1). ns3 is also faction=alliance: the 1.19.4 code adds no namespace to a selector
    # with namespace-label keys (policy-kinds.md 1.2, version-sensitive: the docs call such keys ignored in CNPs).
    Case("k8s-namespace-labels", (cnp("{endpointSelector: {matchLabels: {name: rebel-base}}, ingress: "
                                      "[{fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.faction: "
                                      "alliance}}]}], egress: [{toEndpoints: [{matchLabels: "
                                      "{io.cilium.k8s.namespace.labels.faction: alliance}}]}]}", ns="ns1"),),
         (t(LEIA, REBEL, 80, True), t(LUKE, REBEL, 80, False), t(HAN, REBEL, 80, True), t(REBEL, LEIA, 80, True),
          t(REBEL, LUKE, 80, False))),
    # Trap namespace-label-prefix (issue 14; policy-kinds.md 1.3): a namespace label written without
    # io.cilium.k8s.namespace.labels. is a pod label, so pods of faction=alliance namespaces do not match it.
    Case("trap-namespace-label-prefix", (cnp("{endpointSelector: {matchLabels: {name: rebel-base}}, ingress: "
                                             "[{fromEndpoints: [{matchLabels: {faction: alliance}}]}]}", ns="ns1"),),
         (t(LEIA, REBEL, 80, False), t(HAN, REBEL, 80, False))),
    # kubernetes.rst "ServiceAccounts", examples/policies/kubernetes/serviceaccount/serviceaccount-policy.yaml
    # (frontend runs as luke, backend as leia, both in default).
    Case("k8s-service-account", (cnp("{endpointSelector: {matchLabels: {io.cilium.k8s.policy.serviceaccount: leia}},"
                                     " ingress: [{fromEndpoints: [{matchLabels: "
                                     "{io.cilium.k8s.policy.serviceaccount: luke}}]}]}"),),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, False), t(LUKE, LEIA, 80, True))),
    # policy-kinds.md 1.3 (pkg/labels/labels.go sources; pkg/policy/api/selector.go): "k8s:key" is that source,
    # "any:key" and a bare key any source; pods carry k8s: labels only, so "container:role" selects none.
    Case("label-source-prefixes", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints: "
                                       "[{matchLabels: {'k8s:role': frontend}}, {matchLabels: {'any:app': myService}},"
                                       " {matchLabels: {'container:role': victim}}]}]}"),),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, True), t(VICTIM, BE, 80, False))),
    # --- CCNP scope (kubernetes.rst "Clusterwide Policies") -----------------------------------------
    # examples/policies/kubernetes/clusterwide/wildcard-from-endpoints.yaml: fromEndpoints [{}] in a CCNP is
    # every pod of the cluster, never a node or the world (policy-kinds.md 1.2).
    Case("ccnp-wildcard-from-endpoints", (ccnp("{endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace:"
                                               " kube-system, k8s-app: kube-dns}}, ingress: [{fromEndpoints: [{}],"
                                               " toPorts: [{ports: [{port: '53', protocol: UDP}]}]}]}"),),
         (t(FE, DNS, 53, True, "UDP"), t(LUKE, DNS, 53, True, "UDP"), t(FE, DNS, 53, False),
          t(NODE1, DNS, 53, False, "UDP"), t("8.8.8.8", DNS, 53, False, "UDP"))),
    # The same rule as a CNP in kube-system: fromEndpoints [{}] is only kube-system's pods (policy-kinds.md 1.2, 1.7).
    Case("cnp-wildcard-from-endpoints-own-namespace", (cnp("{endpointSelector: {matchLabels: {k8s-app: kube-dns}},"
                                                           " ingress: [{fromEndpoints: [{}], toPorts: [{ports: "
                                                           "[{port: '53', protocol: UDP}]}]}]}", ns="kube-system"),),
         (t(FE, DNS, 53, False, "UDP"), t(LUKE, DNS, 53, False, "UDP"))),
    # CCNP endpointSelector {} selects pods of every namespace; a CNP's only its own (policy-kinds.md 1.2).
    Case("ccnp-empty-subject-every-namespace", (ccnp("{endpointSelector: {}, ingress: [{}]}"),),
         (t(FE, BE, 80, False), t(LUKE, LEIA, 80, False), t(LEIA, DNS, 53, False, "UDP"))),
    Case("cnp-empty-subject-own-namespace", (cnp("{endpointSelector: {}, ingress: [{}]}"),),
         (t(LEIA, BE, 80, False), t(FE, LEIA, 80, True), t(FE, DNS, 53, True, "UDP"))),
    # language.rst "Host Policies" / policy-kinds.md 1.10: a nodeSelector rule polices the host only, and only
    # with the host firewall (off here): it changes nothing for pods.
    Case("ccnp-node-selector-not-a-pod-policy", (ccnp("{nodeSelector: {}, ingress: [{}]}"),),
         (t(FE, BE, 80, True), t(NODE1, BE, 80, True))),
    # --- Entities (layer3.rst "Entities based") -----------------------------------------------------
    # "Access to/from local host", examples/policies/l3/entities/host.yaml: the host is the victim's node-1.
    Case("entity-host-egress", (cnp("{endpointSelector: {matchLabels: {env: dev}}, egress: [{toEntities: [host]}]}"),),
         (t(VICTIM, NODE1, 10250, True), t(VICTIM, NODE2, 10250, False), t(VICTIM, AGENT, 9090, False),
          t(VICTIM, BE, 80, False), t(VICTIM, "8.8.8.8", 53, False, "UDP"))),
    # "Access to/from all nodes", examples/policies/l3/entities/nodes.yaml.
    Case("entity-host-and-remote-node-ingress", (cnp("{endpointSelector: {matchLabels: {env: dev}}, ingress: "
                                                     "[{fromEntities: [host, remote-node]}]}"),),
         (t(NODE2, VICTIM, 8080, True), t(AGENT, VICTIM, 8080, True), t(FE, VICTIM, 8080, False),
          t("8.8.8.8", VICTIM, 8080, False))),
    # Trap entity-host-vs-remote-node (issue 14): "host" is only the endpoint's own node; with
    # allow-localhost=policy (layer3.rst note) a probe from node-1 needs it, traffic from node-2 is not host.
    Case("trap-entity-host-vs-remote-node", (cnp("{endpointSelector: {matchLabels: {env: dev}}, ingress: "
                                                 "[{fromEntities: [host]}]}"),),
         (t(NODE1, VICTIM, 8080, True), t(NODE2, VICTIM, 8080, False), t(AGENT, VICTIM, 8080, False)),
         Settings(allow_localhost="policy")),
    # "Access to/from outside cluster", examples/policies/l3/entities/world.yaml; an address of the pod CIDR
    # without a pod is not managed by Cilium, so it is world (layer3.rst "CIDR based").
    Case("entity-world", (cnp("{endpointSelector: {matchLabels: {role: public}}, ingress: "
                              "[{fromEntities: [world]}]}"),),
         (t("8.8.8.8", PUBLIC, 443, True), t("10.244.1.250", PUBLIC, 443, True), t(NODE2, PUBLIC, 443, False),
          t(FE, PUBLIC, 443, False))),
    # layer3.rst entity "cluster": every endpoint of the local cluster, host and remote-node, not world.
    Case("entity-cluster", (cnp("{endpointSelector: {matchLabels: {role: public}}, ingress: "
                                "[{fromEntities: [cluster]}]}"),),
         (t(LUKE, PUBLIC, 443, True), t(FE, PUBLIC, 443, True), t(NODE2, PUBLIC, 443, True),
          t("8.8.8.8", PUBLIC, 443, False))),
    # layer3.rst entity "all": "whitelists all communication".
    Case("entity-all", (cnp("{endpointSelector: {matchLabels: {role: public}}, ingress: [{fromEntities: [all]}]}"),),
         (t(LUKE, PUBLIC, 443, True), t(NODE2, PUBLIC, 443, True), t("8.8.8.8", PUBLIC, 443, True))),
    # policy-kinds.md 1.2: a peer selector naming a reserved: label is used unchanged (selects the host).
    Case("reserved-host-selector", (cnp("{endpointSelector: {matchLabels: {env: dev}}, ingress: [{fromEndpoints: "
                                        "[{matchLabels: {'reserved:host': ''}}]}]}"),),
         (t(NODE1, VICTIM, 8080, True), t(FE, VICTIM, 8080, False)), Settings(allow_localhost="policy")),
    # deny.rst, examples/policies/l3/entities/from_world_deny.yaml (CCNP "external-lockdown").
    Case("ccnp-external-lockdown", (ccnp("{endpointSelector: {}, ingressDeny: [{fromEntities: [world]}], ingress: "
                                         "[{fromEntities: [all]}]}"),),
         (t("8.8.8.8", BE, 80, False), t("10.244.1.250", BE, 80, False), t(FE, BE, 80, True), t(NODE1, BE, 80, True),
          t(LUKE, LEIA, 80, True))),
    # --- CIDR (layer3.rst "IP/CIDR based") -----------------------------------------------------------
    # "Allow to external CIDR block", examples/policies/l3/cidr/cidr.yaml; a pod inside 10.0.0.0/8 is not
    # matched: "CIDR rules do not apply to traffic where both sides ... are managed by Cilium".
    Case("cidr-and-cidrset-except", (cnp("{endpointSelector: {matchLabels: {app: myService}}, egress: [{toCIDR: "
                                         "[20.1.1.1/32]}, {toCIDRSet: [{cidr: 10.0.0.0/8, except: "
                                         "[10.96.0.0/12]}]}]}"),),
         (t(MYSVC, "20.1.1.1", 443, True), t(MYSVC, "10.1.2.3", 443, True), t(MYSVC, "10.96.0.5", 443, False),
          t(MYSVC, "8.8.8.8", 443, False), t(MYSVC, BE, 80, False), t(MYSVC, "10.244.1.250", 80, True))),
    # fromCIDRSet with except on ingress (layer3.rst "Ingress", fromCIDRSet).
    Case("from-cidrset-except", (cnp("{endpointSelector: {matchLabels: {role: public}}, ingress: [{fromCIDRSet: "
                                     "[{cidr: 8.8.0.0/16, except: [8.8.8.0/24]}]}]}"),),
         (t("8.8.4.4", PUBLIC, 443, True), t("8.8.8.8", PUBLIC, 443, False))),
    # Trap world-vs-cluster-cidr (issue 14): a CIDR of the pod network cannot match a pod.
    Case("trap-world-vs-cluster-cidr", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                            "[{fromCIDR: [10.244.0.0/16]}]}"),),
         (t(FE, BE, 80, False), t("10.244.1.250", BE, 80, True))),
    # layer3.rst "Selecting nodes with CIDR / ipBlock": nodes only with policy-cidr-match-mode=nodes.
    Case("cidr-does-not-select-nodes", (cnp("{endpointSelector: {matchLabels: {app: myService}}, egress: "
                                            "[{toCIDR: [172.18.0.0/16]}]}"),),
         (t(MYSVC, NODE2, 6443, False), t(MYSVC, NODE1, 6443, False))),
    Case("cidr-selects-nodes-in-nodes-mode", (cnp("{endpointSelector: {matchLabels: {app: myService}}, egress: "
                                                  "[{toCIDR: [172.18.0.0/16]}]}"),),
         (t(MYSVC, NODE2, 6443, True), t(MYSVC, NODE1, 6443, True), t(MYSVC, BE, 80, False)),
         Settings(cidr_match_nodes=True)),
    # --- L4 (layer4.rst) ------------------------------------------------------------------------------
    # layer4.rst "Example (L4)", examples/policies/l4/l4.yaml: "TCP on port 80, to any layer 3 destination"
    # (policy-kinds.md 1.7, row 2: toPorts without an L3 field admits any peer).
    Case("l4-only-any-peer", (cnp("{endpointSelector: {matchLabels: {app: myService}}, egress: [{toPorts: "
                                  "[{ports: [{port: '80', protocol: TCP}]}]}]}"),),
         (t(MYSVC, "8.8.8.8", 80, True), t(MYSVC, BE, 80, True), t(MYSVC, NODE2, 80, True),
          t(MYSVC, "8.8.8.8", 443, False), t(MYSVC, "8.8.8.8", 80, False, "UDP"))),
    # "Port Ranges", examples/policies/l4/l4_port_range.yaml (80-444, inclusive).
    Case("l4-port-range", (cnp("{endpointSelector: {matchLabels: {app: myService}}, egress: [{toPorts: [{ports: "
                               "[{port: '80', endPort: 444, protocol: TCP}]}]}]}"),),
         (t(MYSVC, "8.8.8.8", 80, True), t(MYSVC, "8.8.8.8", 444, True), t(MYSVC, "8.8.8.8", 445, False),
          t(MYSVC, "8.8.8.8", 79, False))),
    # "Labels-dependent Layer 4 rule", examples/policies/l4/l3_l4_combined.yaml.
    Case("l3-l4-combined", (cnp(BACKEND_FROM_FRONTEND_80),),
         (t(FE, BE, 80, True), t(FE, BE, 53, False, "UDP"), t(MYSVC, BE, 80, False))),
    # layer4.rst "Limit ingress/egress ports", PortProtocol: "If omitted or empty, any protocol matches ...
    # \"\"/\"ANY\""; which protocols "any" expands to (TCP, UDP, SCTP) is policy-kinds.md 1.5 (rule.go).
    Case("l4-protocol-any", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{toPorts: [{ports: "
                                 "[{port: '53', protocol: ANY}]}]}, {toPorts: [{ports: [{port: '80'}]}]}]}"),),
         (t(FE, BE, 53, True, "UDP"), t(FE, BE, 53, True), t(FE, BE, 53, True, "SCTP"), t(FE, BE, 80, True, "UDP"),
          t(FE, BE, 81, False))),
    # layer4.rst PortProtocol: "Port can be an L4 port number, or a name in the form of \"http\" ... EndPort is
    # ignored if Port is a named port"; resolved on the destination (policy-kinds.md 1.5).
    Case("l4-named-port", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{toPorts: [{ports: "
                               "[{port: http, protocol: TCP}, {port: dns, protocol: UDP}]}]}]}"),),
         (t(FE, BE, 80, True), t(FE, BE, 53, True, "UDP"), t(FE, BE, 81, False), t(FE, BE, 53, False))),
    # A named port is the destination's port of that name *and* protocol: dns is 53/UDP on backend.
    Case("l4-named-port-protocol-must-match", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                                   "[{toPorts: [{ports: [{port: dns, protocol: TCP}]}]}]}"),),
         (t(FE, BE, 53, False), t(FE, BE, 53, False, "UDP"))),
    Case("l4-named-port-egress", (cnp("{endpointSelector: {matchLabels: {role: frontend}}, egress: [{toPorts: "
                                      "[{ports: [{port: http}]}]}]}"),),
         (t(FE, BE, 80, True), t(FE, "8.8.8.8", 80, False))),
    # policy-kinds.md 1.5: port "0" is every port.
    Case("l4-port-zero-any-port", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints:"
                                       " [{matchLabels: {role: frontend}}], toPorts: [{ports: [{port: '0', protocol: "
                                       "TCP}]}]}]}"),),
         (t(FE, BE, 8443, True), t(FE, BE, 53, False, "UDP"))),
    # --- Deny policies (deny.rst, the enforcement table; server = backend, client = frontend) -------------
    Case("deny-table-allows-only", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints:"
                                        " [{matchLabels: {role: frontend}}]}, {toPorts: [{ports: [{port: '80', "
                                        "protocol: TCP}, {port: '81', protocol: TCP}]}]}]}"),),
         (t(FE, BE, 81, True), t(FE, BE, 80, True))),
    Case("deny-table-l4-deny", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints:"
                                    " [{matchLabels: {role: frontend}}]}, {toPorts: [{ports: [{port: '80', protocol:"
                                    " TCP}, {port: '81', protocol: TCP}]}]}], ingressDeny: [{toPorts: [{ports: "
                                    "[{port: '80', protocol: TCP}]}]}]}"),),
         (t(FE, BE, 81, True), t(FE, BE, 80, False), t(FE, BE, 53, True, "UDP"))),
    Case("deny-table-l3-deny", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints:"
                                    " [{matchLabels: {role: frontend}}]}], ingressDeny: [{fromEndpoints: "
                                    "[{matchLabels: {role: frontend}}]}]}"),),
         (t(FE, BE, 81, False), t(FE, BE, 80, False))),
    Case("deny-table-deny-only", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingressDeny: [{toPorts: "
                                      "[{ports: [{port: '80', protocol: TCP}]}]}]}"),),
         # deny.rst: "Pods will enter default-deny mode as soon as a single policy selects it".
         (t(FE, BE, 81, False), t(FE, BE, 80, False))),
    # Trap deny-overrides-allow across objects and kinds (deny.rst: "regardless of whether they are a Cilium
    # Network Policy, a Clusterwide Cilium Network Policy or even a Kubernetes Network Policy").
    Case("trap-deny-overrides-allow", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                           "[{fromEntities: [all]}]}", name="allow"),
                                       ccnp("{endpointSelector: {}, ingressDeny: [{fromEndpoints: [{matchLabels: "
                                            "{k8s:io.kubernetes.pod.namespace: default, role: frontend}}]}],"
                                            " enableDefaultDeny: {ingress: false}}")),
         (t(FE, BE, 80, False), t(MYSVC, BE, 80, True), t(LUKE, LEIA, 80, True))),
    # --- enableDefaultDeny (intro.rst "Endpoint default policy", policy-kinds.md 1.8) ----------------------
    # intro.rst's CCNP intercept-all-dns: "causes all DNS traffic to be intercepted, but does not block any traffic".
    Case("intro-intercept-all-dns", (ccnp("{endpointSelector: {matchExpressions: [{key: io.kubernetes.pod.namespace,"
                                          " operator: NotIn, values: [kube-system]}, {key: k8s-app, operator: NotIn,"
                                          " values: [kube-dns]}]}, enableDefaultDeny: {egress: false, ingress: false},"
                                          " egress: [{toEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: "
                                          "kube-system, k8s-app: kube-dns}}], toPorts: [{ports: [{port: '53', "
                                          "protocol: TCP}, {port: '53', protocol: UDP}], rules: {dns: "
                                          "[{matchPattern: '*'}]}}]}]}", name="intercept-all-dns"),),
         (t(FE, DNS, 53, True, "UDP"), t(FE, "8.8.8.8", 443, True), t(LUKE, BE, 80, True))),
    Case("default-deny-off-allow-adds-nothing", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                     "enableDefaultDeny: {ingress: false}, ingress: [{fromEndpoints:"
                                                     " [{matchLabels: {role: frontend}}]}]}"),),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, True), t("8.8.8.8", BE, 80, True))),
    Case("default-deny-off-deny-only-restricts", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                      "enableDefaultDeny: {ingress: false}, ingressDeny: "
                                                      "[{fromEntities: [world]}]}"),),
         (t("8.8.8.8", BE, 80, False), t(FE, BE, 80, True))),
    Case("default-deny-any-policy-requests-it", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                     "enableDefaultDeny: {ingress: false}, ingress: [{fromEndpoints:"
                                                     " [{matchLabels: {role: frontend}}]}]}", name="soft"),
                                                 cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                                     "[{fromEndpoints: [{matchLabels: {app: myService}}]}]}",
                                                     name="hard")),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, True), t(VICTIM, BE, 80, False))),
    Case("default-deny-true-without-rules-no-effect", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                           "enableDefaultDeny: {ingress: true}, egress: "
                                                           "[{toEntities: [all]}]}"),),
         (t(FE, BE, 80, True), t(BE, "8.8.8.8", 443, True))),
    # --- Empty lists and {} (policy-kinds.md 1.7, the traps table) ------------------------------------------
    # Row 1 / trap cnp-empty-rule-denies: cilium-cli connectivity/builder/manifests/deny-all-ingress.yaml.
    Case("trap-cnp-empty-rule-denies", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{}]}"),),
         (t(FE, BE, 80, False), t("8.8.8.8", BE, 80, False), t(NODE1, BE, 80, False),
          t(NODE2, BE, 80, True))),  # its own node still reaches it (allow-localhost)
    Case("cnp-empty-egress-rule-denies", (cnp("{endpointSelector: {matchLabels: {role: frontend}}, egress: [{}]}"),),
         (t(FE, BE, 80, False), t(FE, "8.8.8.8", 53, False, "UDP"), t(BE, FE, 80, True))),
    # Row 2: toPorts without an L3 field is any peer (see also l4-only-any-peer).
    Case("table-ports-only-any-peer", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{toPorts:"
                                           " [{ports: [{port: '80', protocol: TCP}]}]}]}"),),
         (t("8.8.8.8", BE, 80, True), t(NODE1, BE, 80, True), t(LUKE, BE, 80, True), t(FE, BE, 81, False))),
    # Row 3: an explicit empty L3 list selects nothing, even with toPorts.
    Case("table-empty-from-endpoints-selects-nothing", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                            "ingress: [{fromEndpoints: [], toPorts: [{ports: "
                                                            "[{port: '80', protocol: TCP}]}]}]}"),),
         (t(FE, BE, 80, False), t("8.8.8.8", BE, 80, False))),
    Case("table-empty-from-entities-selects-nothing", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                           "ingress: [{fromEntities: [], toPorts: [{ports: "
                                                           "[{port: '80'}]}]}]}"),),
         (t(FE, BE, 80, False),)),
    Case("table-empty-from-cidr-selects-nothing", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                       "ingress: [{fromCIDR: [], toPorts: [{ports: "
                                                       "[{port: '80'}]}]}]}"),),
         (t("8.8.8.8", BE, 80, False),)),
    # Row 4: fromEndpoints [{}] (see k8s-isolate-namespace and ccnp-wildcard-from-endpoints).
    # Row 5: ingress: [] (all sections empty) is refused, so it has no effect; an absent ingress does not
    # isolate; ingress: [] beside a real egress is valid and isolates egress only.
    Case("table-empty-ingress-list-invalid", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: []}"),),
         (t(FE, BE, 80, True), t("8.8.8.8", BE, 80, True))),
    Case("table-egress-only-leaves-ingress-open", (cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                       "ingress: [], egress: [{toEndpoints: [{}]}]}"),),
         (t("8.8.8.8", BE, 80, True), t(BE, "8.8.8.8", 443, False), t(BE, FE, 80, True))),
    # layer3.rst "Ingress/Egress Default Deny": examples/policies/l3/egress-default-deny's "egress: []" is
    # refused since v1.17 (policy-kinds.md 1.1), so the example as written has no effect.
    Case("doc-egress-default-deny-as-written-is-invalid", (cnp("{endpointSelector: {matchLabels: {role: frontend}},"
                                                               " egress: []}"),),
         (t(FE, "8.8.8.8", 443, True),)),
    # Row 6: a Kubernetes NetworkPolicy ingress: [{}] under Cilium admits all sources, world and host included.
    Case("table-knp-empty-rule-allows-all", (knp("{podSelector: {matchLabels: {role: backend}}, ingress: [{}]}"),),
         (t("8.8.8.8", BE, 80, True), t(NODE1, BE, 80, True), t(LUKE, BE, 80, True))),
    # Row 7: KNP without policyTypes and without rules: ingress default deny, egress untouched.
    Case("table-knp-no-rules-ingress-only", (knp("{podSelector: {matchLabels: {role: backend}}}"),),
         (t(FE, BE, 80, False), t(BE, "8.8.8.8", 443, True), t(NODE2, BE, 80, True))),
    # A Kubernetes NetworkPolicy ipBlock under Cilium is a CIDR selector: it never matches a pod
    # (network/kubernetes/policy.rst, known gap "ipBlock set with a pod IP", cilium/cilium#9209; layer3.rst).
    Case("knp-ip-block-blind-to-pods", (knp("{podSelector: {matchLabels: {role: backend}}, ingress: [{from: "
                                            "[{ipBlock: {cidr: 10.244.0.0/16}}]}]}"),),
         (t(FE, BE, 80, False), t("10.244.1.250", BE, 80, True), t("8.8.8.8", BE, 80, False))),
    # --- Validity (policy-kinds.md 1.1): an invalid object has no effect at all ---------------------------
    Case("invalid-two-l3-fields-in-one-rule", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                                   "[{fromEndpoints: [{}], fromCIDR: [8.8.8.8/32]}]}"),),
         (t(LUKE, BE, 80, True),)),
    Case("invalid-node-selector-in-cnp", (cnp("{nodeSelector: {}, endpointSelector: {matchLabels: {role: backend}},"
                                              " ingress: [{}]}"),),
         (t(FE, BE, 80, True),)),
    # cnp_types.go Parse: spec and specs are added together.
    Case("spec-and-specs-together", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints:"
                                         " [{matchLabels: {role: frontend}}]}]}\nspecs:\n- {endpointSelector: "
                                         "{matchLabels: {role: backend}}, ingress: [{fromEndpoints: [{matchLabels: "
                                         "{app: myService}}]}]}"),),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, True), t(VICTIM, BE, 80, False))),
    # --- With a Kubernetes NetworkPolicy on the same pod (policy-kinds.md 1.9) -----------------------------
    Case("knp-and-cnp-allows-are-a-union", (knp("{podSelector: {matchLabels: {role: backend}}, ingress: [{from: "
                                                 "[{podSelector: {matchLabels: {role: frontend}}}]}]}"),
                                            cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                                "[{fromEndpoints: [{matchLabels: {app: myService}}]}]}")),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, True), t(VICTIM, BE, 80, False))),
    Case("cnp-deny-beats-knp-allow", (knp("{podSelector: {matchLabels: {role: backend}}, ingress: [{}]}"),
                                      cnp("{endpointSelector: {matchLabels: {role: backend}}, ingressDeny: "
                                          "[{fromEndpoints: [{matchLabels: {role: frontend}}]}]}")),
         (t(FE, BE, 80, False), t(MYSVC, BE, 80, True))),
    Case("knp-default-deny-beats-soft-cnp", (knp("{podSelector: {matchLabels: {role: backend}}, ingress: [{from: "
                                                 "[{podSelector: {matchLabels: {role: frontend}}}]}]}"),
                                             cnp("{endpointSelector: {matchLabels: {role: backend}}, "
                                                 "enableDefaultDeny: {ingress: false}, ingress: [{fromEndpoints: "
                                                 "[{matchLabels: {app: myService}}]}]}")),
         (t(FE, BE, 80, True), t(MYSVC, BE, 80, True), t(VICTIM, BE, 80, False))),
    # --- allow-localhost (policy-kinds.md 5.1; layer3.rst "Access to/from local host" note) -----------------
    Case("allow-localhost-always", (cnp(BACKEND_FROM_FRONTEND_80),),
         (t(NODE2, BE, 8080, True), t(AGENT, BE, 8080, True), t(NODE1, BE, 8080, False))),
    Case("allow-localhost-policy", (cnp(BACKEND_FROM_FRONTEND_80),),
         (t(NODE2, BE, 8080, False), t(AGENT, BE, 8080, False)), Settings(allow_localhost="policy")),
    Case("allow-localhost-deny-still-wins", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: "
                                                 "[{fromEndpoints: [{matchLabels: {role: frontend}}]}], ingressDeny:"
                                                 " [{fromEntities: [host]}]}"),),
         (t(NODE2, BE, 8080, False), t(FE, BE, 8080, True))),
    Case("enforcement-always-no-rule", (),
         (t(FE, BE, 80, False), t(NODE2, BE, 80, False)), Settings(enforcement="always")),
    # --- L7 and FQDN: what an L3/L4 verdict can say (policy-kinds.md 1.4, 1.6) -------------------------------
    # layer7.rst "HTTP": the L3/L4 part admits the connection, the proxy then decides per request.
    Case("l7-http-admitted-at-l4", (cnp("{endpointSelector: {matchLabels: {role: backend}}, ingress: [{fromEndpoints:"
                                        " [{matchLabels: {role: frontend}}], toPorts: [{ports: [{port: '80', "
                                        "protocol: TCP}], rules: {http: [{method: GET, path: /public}]}}]}]}"),),
         (t(FE, BE, 80, True), t(FE, BE, 81, False), t(MYSVC, BE, 80, False))),
    # layer3.rst "DNS based", examples/policies/l3/fqdn/fqdn.yaml shape: toFQDNs puts the pod in egress
    # default deny; only the DNS rule and matching names pass (world addresses not asked: depends on DNS).
    Case("fqdn-egress-default-deny", (cnp("{endpointSelector: {matchLabels: {role: frontend}}, egress: [{toEndpoints:"
                                          " [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, "
                                          "k8s-app: kube-dns}}], toPorts: [{ports: [{port: '53', protocol: ANY}], "
                                          "rules: {dns: [{matchPattern: '*'}]}}]}, {toFQDNs: [{matchName: "
                                          "my-remote-service.com}]}]}"),),
         (t(FE, DNS, 53, True, "UDP"), t(FE, BE, 80, False))),
)


def _params() -> list[object]:
    return [pytest.param(c, id=c.id) for c in CASES]


def documents(case: Case) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = list(yaml.safe_load(CLUSTER_YAML)["items"])
    for text in case.policies:
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def profile_of(settings: Settings) -> profiles.Profile:
    pairs = [f"allow-localhost={settings.allow_localhost}", f"policy-enforcement-mode={settings.enforcement}"]
    if settings.cidr_match_nodes:
        pairs.append("policy-cidr-match-mode=nodes")
    return profiles.parse(",".join(["cilium", *pairs]))


def product_allows(case: Case, check: Check) -> bool:
    objs = parse_documents("cluster.yaml", CLUSTER_YAML)
    if case.policies:
        objs += parse_documents("policies.yaml", "---\n".join(case.policies))
    state = ClusterState.build(objs)
    src, dst, port, proto, _ = check
    conn = queries.connection(state, queries.Query(src, dst, port, proto))
    return Engine(state, profile_of(case.settings)).evaluate(conn).allowed


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_naive_evaluator_agrees_with_the_documentation(case: Case) -> None:
    """The table and the naive evaluator agree: the table is the naive evaluator's specification too."""
    docs = documents(case)
    got = [(src, dst, port, proto, naive_cilium.evaluate(docs, src, dst, port, proto, settings=case.settings).allowed)
           for src, dst, port, proto, _ in case.checks]
    assert got == list(case.checks)


@pytest.mark.parametrize("case", _params())
def test_engine_agrees_with_the_documentation(case: Case) -> None:
    """The product engine gives the documented verdict for every connection of the case."""
    got = [(src, dst, port, proto, product_allows(case, (src, dst, port, proto, ok)))
           for src, dst, port, proto, ok in case.checks]
    assert got == list(case.checks)

