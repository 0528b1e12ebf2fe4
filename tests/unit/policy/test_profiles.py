"""The pod's own node, per CNI profile: networking/v1 exempts it, datapaths differ, answers say which applied.

The baseline is the v1 API text, NetworkPolicySpec.Ingress in kubernetes/api networking/v1/types.go:
"Traffic is allowed to a pod if there are no NetworkPolicies selecting the pod OR if the traffic source is the
pod's local node". The per-CNI rows follow the policy-kinds reference, section 5 (docs/profiles.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_connection
from drop_explainer.policy import profiles, queries
from drop_explainer.policy.engine import Engine

WORLD = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: a}}
- {kind: Namespace, metadata: {name: b}}
- kind: Node
  metadata: {name: n1}
  spec: {podCIDRs: [10.1.1.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: InternalIP, address: 192.168.0.101}]}
- kind: Node
  metadata: {name: n2}
  spec: {podCIDRs: [10.1.2.0/24]}
  status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
- kind: Pod
  metadata: {name: server, namespace: b, labels: {app: server}}
  spec:
    nodeName: n1
    containers:
    - name: s
      ports: [{name: web, containerPort: 8080}]
      livenessProbe: {httpGet: {path: /healthz, port: web}}
  status: {phase: Running, podIP: 10.1.1.9, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: agent, namespace: a, labels: {app: agent}}
  spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
  status: {phase: Running, podIP: 192.168.0.1, hostIP: 192.168.0.1}
- kind: Pod
  metadata: {name: agent2, namespace: a, labels: {app: agent}}
  spec: {nodeName: n2, hostNetwork: true, containers: [{name: c}]}
  status: {phase: Running, podIP: 192.168.0.2, hostIP: 192.168.0.2}
- kind: Pod
  metadata: {name: client, namespace: a, labels: {app: client}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 9000}]}]}
  status: {phase: Running, podIP: 10.1.2.5, hostIP: 192.168.0.2}
- kind: NetworkPolicy
  metadata: {name: pods-only, namespace: b}
  spec:
    podSelector: {}
    ingress: [{from: [{namespaceSelector: {}}]}]
"""

STATE = ClusterState.build(parse_documents("world", WORLD))


def _ingress(cni: str, src: str, dst: str = "b/server", port: int = 8080) -> tuple[bool, bool | None]:
    engine = Engine(STATE, profiles.parse(cni))
    conn = queries.connection(STATE, queries.Query(src, dst, port))
    verdict = engine.evaluate(conn).ingress
    return verdict.allowed, None if verdict.node_local is None else verdict.node_local.exempt


OWN_NODE = "192.168.0.1"
OTHER_NODE = "192.168.0.2"


@pytest.mark.parametrize(
    ("cni", "src", "allowed", "exempt"),
    [
        # networking/v1: the pod's local node is allowed, by any of its addresses or host processes.
        pytest.param("spec", OWN_NODE, True, True, id="spec-own-node-ip"),
        pytest.param("spec", "node/n1", True, True, id="spec-own-node-by-name"),
        pytest.param("spec", "n1", True, True, id="spec-own-node-bare-name"),
        pytest.param("spec", "192.168.0.101", True, True, id="spec-own-node-second-address"),
        pytest.param("spec", "a/agent", True, True, id="spec-host-network-pod-on-own-node"),
        pytest.param("spec", OTHER_NODE, False, None, id="spec-other-node-is-not-exempt"),
        pytest.param("spec", "a/agent2", False, None, id="spec-host-network-pod-on-other-node"),
        pytest.param("spec", "10.1.1.2", False, None, id="spec-pod-network-address-is-not-the-node"),
        pytest.param("cilium", OWN_NODE, True, True, id="cilium-allow-localhost-default"),
        pytest.param("cilium,allow-localhost=always", OWN_NODE, True, True, id="cilium-allow-localhost-always"),
        pytest.param("cilium,allow-localhost=policy", OWN_NODE, False, False, id="cilium-allow-localhost-policy"),
        pytest.param("cilium,allow-localhost=policy", "a/agent", False, False, id="cilium-policy-host-network-pod"),
        pytest.param("cilium,policy-enforcement-mode=always", OWN_NODE, True, True,
                     id="cilium-always-mode-pod-with-ingress-rules"),
        pytest.param("cilium", OTHER_NODE, False, None, id="cilium-remote-node-not-exempt"),
        pytest.param("calico", OWN_NODE, True, True, id="calico"),
        pytest.param("antrea", OWN_NODE, True, True, id="antrea"),
        pytest.param("kube-router", "192.168.0.101", True, True, id="kube-router-any-local-address"),
        pytest.param("aws-vpc-cni", OWN_NODE, True, True, id="aws-primary-ip"),
        pytest.param("aws-vpc-cni", "192.168.0.101", False, False, id="aws-secondary-ip-not-exempt"),
        pytest.param("kube-network-policies", OWN_NODE, True, True, id="kube-network-policies-root-sockets"),
        pytest.param("ovn-kubernetes", OWN_NODE, True, True, id="ovn-node"),
        pytest.param("ovn-kubernetes", "10.1.1.2", True, True, id="ovn-management-port-address"),
        pytest.param("ovn-kubernetes", OTHER_NODE, False, None, id="ovn-other-node"),
    ],
)
def test_traffic_from_the_pods_own_node_follows_the_profile(cni: str, src: str, allowed: bool,
                                                             exempt: bool | None) -> None:
    """Own node: exempt where the datapath exempts it; another node is never "the pod's local node"."""
    assert _ingress(cni, src) == (allowed, exempt)


@pytest.mark.parametrize("cni", profiles.NAMES)
def test_every_answer_names_its_profile(cni: str) -> None:
    """Text and JSON of an answer carry the profile that judged it."""
    from drop_explainer.explain import rendering

    engine = Engine(STATE, profiles.parse(cni))
    expl = explain_connection(engine, queries.connection(STATE, queries.Query(OTHER_NODE, "b/server", 8080)))
    assert f"CNI profile: {cni}, set by --cni" in rendering.explanation_text(expl)
    assert rendering.explanation_json(expl)["profile"] == {"name": cni, "settings": {}, "origin": "set by --cni"}


def test_cilium_enforcement_mode_always_isolates_unselected_pods_and_adds_no_host_allow() -> None:
    """With policy-enforcement-mode=always a pod no policy selects accepts nothing, not even from its node."""
    always = Engine(STATE, profiles.parse("cilium,policy-enforcement-mode=always"))
    default = Engine(STATE, profiles.parse("cilium"))
    conn = queries.connection(STATE, queries.Query(OTHER_NODE, "a/client", 9000))
    assert default.evaluate(conn).allowed
    verdict = always.evaluate(conn)
    assert not verdict.allowed
    assert verdict.ingress.isolated_by_mode is not None
    assert verdict.ingress.node_local is not None
    assert not verdict.ingress.node_local.exempt
    expl = explain_connection(always, conn)
    assert "isolated by the datapath: Cilium policy-enforcement-mode=always" in expl.headline


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("weave", "unknown CNI profile 'weave'", id="unknown-name"),
        pytest.param("cilium,allow-localhost=sometimes", "allow-localhost must be one of", id="bad-value"),
        pytest.param("calico,allow-localhost=policy", "it takes no settings", id="setting-of-another-cni"),
        pytest.param("cilium,colour=red", "unknown setting 'colour=red'", id="unknown-setting"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason(text: str, error: str) -> None:
    """A typo in --cni is an error naming what is accepted, never a silent default."""
    with pytest.raises(profiles.ProfileError, match=error.replace("(", r"\(")):
        profiles.parse(text)


def test_cilium_config_key_names_are_accepted() -> None:
    """enable-policy (cilium-config) is the same setting as policy-enforcement-mode."""
    assert profiles.parse("cilium,enable-policy=always").isolates_every_pod


@pytest.mark.parametrize(
    ("configured", "detected", "source", "name", "origin"),
    [
        pytest.param(None, None, None, "spec", "default for an offline what-if", id="offline-default"),
        pytest.param(None, None, "hubble", "cilium", "default for the hubble flow source", id="hubble"),
        pytest.param(None, None, "calico-goldmane", "calico", "default for the calico-goldmane flow source",
                     id="goldmane"),
        pytest.param(None, None, "calico-felix", "calico", "default for the calico-felix flow source", id="felix"),
        pytest.param(None, None, "antrea", "antrea", "default for the antrea flow source", id="antrea"),
        pytest.param(None, "kube-router", "hubble", "kube-router", "detected from the cluster", id="detection-wins"),
        pytest.param(None, "spec", "hubble", "cilium", "default for the hubble flow source",
                     id="nothing-detected-falls-back-to-source"),
        pytest.param("aws-vpc-cni", "cilium", "hubble", "aws-vpc-cni", "set by --cni", id="configured-wins"),
    ],
)
def test_the_profile_is_configured_then_detected_then_the_sources(configured: str | None, detected: str | None,
                                                                   source: str | None, name: str,
                                                                   origin: str) -> None:
    """--cni first, then the detected enforcer's profile, then the flow source's default, then spec."""
    chosen = profiles.choose(configured, detected=detected, source=source)
    assert (chosen.name, chosen.origin) == (name, origin)


IP_BLOCKS = ClusterState.build(parse_documents("ipblocks", WORLD.replace(
    "ingress: [{from: [{namespaceSelector: {}}]}]",
    "ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/24}}, {ipBlock: {cidr: 10.1.2.0/24}}, "
    "{ipBlock: {cidr: 203.0.113.0/24}}]}]")))


@pytest.mark.parametrize(
    ("cni", "src", "allowed"),
    [
        pytest.param("spec", OTHER_NODE, True, id="spec-ipblock-matches-a-node"),
        pytest.param("spec", "a/client", True, id="spec-ipblock-matches-a-pod-address"),
        pytest.param("cilium", OTHER_NODE, False, id="cilium-ipblock-blind-to-nodes"),
        pytest.param("cilium", "a/agent2", False, id="cilium-ipblock-blind-to-host-network-pods"),
        pytest.param("cilium,policy-cidr-match-mode=nodes", OTHER_NODE, True, id="cilium-cidr-match-mode-nodes"),
        pytest.param("cilium", "a/client", False, id="cilium-ipblock-never-matches-pods"),
        pytest.param("cilium", "203.0.113.9", True, id="cilium-ipblock-matches-the-world"),
        pytest.param("calico", OTHER_NODE, True, id="calico-ipblock-matches-a-node"),
    ],
)
def test_what_an_ip_block_can_match_follows_the_profile(cni: str, src: str, allowed: bool) -> None:
    """Cilium: "By default, CIDR-based selectors do not match in-cluster entities (pods or nodes)" (layer3.rst)."""
    engine = Engine(IP_BLOCKS, profiles.parse(cni))
    conn = queries.connection(IP_BLOCKS, queries.Query(src, "b/server", 8080))
    assert engine.evaluate(conn).ingress.allowed is allowed
    expl = explain_connection(engine, conn)
    if not allowed:
        # The trace says why, clause by clause, with the same reason the engine used.
        messages = [f.message for t in expl.denying for r in t.rules for f in r.failures]
        assert any("on Cilium an ipBlock" in m for m in messages)


def test_a_detected_cilium_brings_its_config_settings(tmp_path: Path) -> None:
    """A state saved with the cilium DaemonSet and cilium-config: the profile is cilium with those settings."""
    (tmp_path / "world.yaml").write_text(WORLD)
    (tmp_path / "cni.yaml").write_text("""
kind: List
items:
- {apiVersion: apps/v1, kind: DaemonSet, metadata: {name: cilium, namespace: kube-system, labels: {k8s-app: cilium}}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cilium-config, namespace: kube-system}
  data: {enable-policy: always, allow-localhost: policy, policy-cidr-match-mode: "", policy-audit-mode: "false"}
""")
    engine = Engine(load_state(tmp_path))
    assert engine.profile.name == "cilium"
    assert engine.profile.settings == (("allow-localhost", "policy"), ("policy-enforcement-mode", "always"))
    assert engine.profile.origin.startswith("detected from the cluster (DaemonSet kube-system/cilium")
    conn = queries.connection(engine.state, queries.Query(OWN_NODE, "b/server", 8080))
    assert not engine.evaluate(conn).allowed
