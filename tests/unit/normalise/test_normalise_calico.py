"""Calico flows (Goldmane/Felix protobuf, Enterprise flow-log JSON) -> our Flow record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drop_explainer.flows import model
from drop_explainer.flows.model import Direction, DropKind, EndpointKind, PolicyHit, Protocol, Verdict
from drop_explainer.goldmane_pb import goldmane_pb2 as gm
from drop_explainer.normalise import calico
from drop_explainer.testing.goldmane_server import default_deny_flow, end_of_tier, goldmane_flow, rule_hit

T = 1_764_000_000
S = 1_000_000_000
DATATYPES = "fixtures/calico/enterprise-flowlog-example-datatypes-doc.txt"
FORWARDED = "fixtures/calico/enterprise-flowlog-examples-host-forwarded-doc.jsonl"


def test_a_kubernetes_default_deny_is_a_policy_denied_ingress_drop_at_the_bucket_end() -> None:
    """EndOfTier in tier default with a NetworkPolicy trigger -> DROPPED, INGRESS, POLICY_DENIED, counts summed."""
    flow = calico.flow_from_proto(default_deny_flow(T, packets=7, connections=3))
    assert (flow.verdict, flow.direction, flow.drop_kind, flow.drop_reason) == (
        Verdict.DROPPED, Direction.INGRESS, DropKind.POLICY_DENIED, "end-of-tier-deny")
    assert flow.time_ns == (T + 15) * S
    assert (flow.packets, flow.connections, flow.origin) == (7, 3, "calico")
    assert (flow.protocol, flow.destination_port, flow.source_port, flow.node) == (Protocol.TCP, 8080, None, None)
    assert flow.attribution == (PolicyHit(name="default-deny", namespace="backend", kind="NetworkPolicy",
                                          action="end-of-tier-deny", tier="default", trigger="backend/default-deny"),)
    assert (flow.source.pod, flow.source.namespace, flow.destination.pod) == ("pod-a", "frontend", "pod-b")


def test_a_source_reported_deny_is_an_egress_drop_counting_packets_out() -> None:
    """Reporter Src means egress policy decided at the source's node; its packets are outbound."""
    flow = calico.flow_from_proto(default_deny_flow(T, reporter=gm.Src, packets=4))
    assert flow.direction is Direction.EGRESS
    assert flow.packets == 4


def test_an_allowed_flow_is_forwarded_and_no_drop() -> None:
    """Action Allow -> FORWARDED, drop kind NONE, the allowing hits kept."""
    allow = rule_hit(gm.Profile, "", "kns.backend", tier="", action=gm.Allow, rule_index=0)
    flow = calico.flow_from_proto(goldmane_flow(T, action=gm.Allow, enforced=[allow]))
    assert (flow.verdict, flow.drop_kind, flow.drop_reason) == (Verdict.FORWARDED, DropKind.NONE, None)
    assert flow.attribution == (PolicyHit(name="kns.backend", kind="Profile", action="allow", rule_index=0),)


def test_an_aggregated_name_becomes_a_pod_prefix_with_the_shared_labels() -> None:
    """nginx-86c57db685-* -> pod_prefix nginx-86c57db685-, no pod; projectcalico.org/ labels dropped."""
    pb = goldmane_flow(T, dest=("web", "nginx-86c57db685-*"),
                       dest_labels=["app=nginx", "pod-template-hash=86c57db685", "projectcalico.org/namespace=web",
                                    "empty="])
    dst = calico.flow_from_proto(pb).destination
    assert (dst.kind, dst.pod, dst.pod_prefix, dst.namespace) == (EndpointKind.POD, None, "nginx-86c57db685-", "web")
    assert dict(dst.labels) == {"app": "nginx", "pod-template-hash": "86c57db685", "empty": ""}


@pytest.mark.parametrize(("kind", "name", "expect_kind"), [
    pytest.param(gm.Network, "pub", EndpointKind.WORLD, id="public-network"),
    pytest.param(gm.NetworkSet, "partners", EndpointKind.WORLD, id="global-network-set"),
    pytest.param(gm.HostEndpoint, "node-1", EndpointKind.HOST, id="host-endpoint"),
    pytest.param(gm.EndpointTypeUnspecified, "x", EndpointKind.UNKNOWN, id="unspecified"),
])
def test_ends_that_are_not_pods_have_no_namespace_and_no_pod(kind: int, name: str, expect_kind: EndpointKind) -> None:
    """Namespace "-" means none; networks, sets and hosts never become pods."""
    pb = goldmane_flow(T)
    pb.Key.source_type, pb.Key.source_name, pb.Key.source_namespace = kind, name, "-"  # type: ignore[assignment]
    src = calico.flow_from_proto(pb).source
    assert (src.kind, src.namespace, src.pod, src.pod_prefix, src.ip) == (expect_kind, None, None, None, None)


def test_an_explicit_calico_deny_rule_is_policy_deny_with_tier_and_rule_index() -> None:
    """A GlobalNetworkPolicy Deny rule -> POLICY_DENY, kind and rule index kept, no namespace."""
    hit = rule_hit(gm.GlobalNetworkPolicy, "", "block-db", tier="security", action=gm.Deny, rule_index=2)
    flow = calico.flow_from_proto(goldmane_flow(T, enforced=[hit]))
    assert (flow.drop_kind, flow.drop_reason) == (DropKind.POLICY_DENY, "deny-rule")
    assert flow.attribution == (PolicyHit(name="block-db", kind="GlobalNetworkPolicy", action="deny", rule_index=2,
                                          tier="security"),)


def test_hits_are_in_evaluation_order_and_a_pass_precedes_the_deciding_deny() -> None:
    """Hits sorted by policy_index whatever the wire order; the decision is the last enforced deny."""
    passed = rule_hit(gm.GlobalNetworkPolicy, "", "tenant-gate", tier="security", action=gm.Pass, rule_index=0)
    eot = end_of_tier(gm.NetworkPolicy, "shop", "checkout", policy_index=1)
    flow = calico.flow_from_proto(goldmane_flow(T, enforced=[eot, passed]))
    assert [(h.name, h.action) for h in flow.attribution] == [("tenant-gate", "pass"), ("checkout", "end-of-tier-deny")]
    assert calico.deciding_hit(flow.attribution) == flow.attribution[1]
    assert flow.drop_kind is DropKind.POLICY_DENIED


def test_staged_policies_of_the_pending_trace_are_kept_as_staged() -> None:
    """Pending-only staged hits are added with staged=True; pending repeats of enforced hits are not."""
    allow = rule_hit(gm.Profile, "", "kns.backend", tier="", action=gm.Allow, rule_index=0)
    staged = end_of_tier(gm.StagedNetworkPolicy, "backend", "lockdown", tier="tier2")
    flow = calico.flow_from_proto(goldmane_flow(T, action=gm.Allow, enforced=[allow], pending=[staged, allow]))
    assert flow.attribution[1] == PolicyHit(name="lockdown", namespace="backend", kind="StagedNetworkPolicy",
                                            action="end-of-tier-deny", tier="tier2", trigger="backend/lockdown",
                                            staged=True)
    assert len(flow.attribution) == 2
    assert calico.deciding_hit(flow.attribution) is None  # a staged deny decides nothing


@pytest.mark.parametrize(("kind", "name", "tier", "expect"), [
    pytest.param(gm.AdminNetworkPolicy, "kanp.adminnetworkpolicy.tenants", "adminnetworkpolicy",
                 ("AdminNetworkPolicy", "tenants"), id="anp-3.30"),
    pytest.param(gm.BaselineAdminNetworkPolicy, "default", "baselineadminnetworkpolicy",
                 ("BaselineAdminNetworkPolicy", "default"), id="banp-3.31"),
    pytest.param(gm.ClusterNetworkPolicy, "pass-ingress", "kube-admin", ("ClusterNetworkPolicy", "pass-ingress"),
                 id="cnp-3.32"),
    pytest.param(gm.NetworkPolicy, "knp.default.ledger", "default", ("NetworkPolicy", "ledger"), id="knp-prefixed"),
    pytest.param(12, "future", "x", ("PolicyKind12", "future"), id="unknown-kind-number"),
])
def test_policy_kinds_of_each_calico_version_keep_their_names(kind: int, name: str, tier: str,
                                                             expect: tuple[str, str]) -> None:
    """Kind names for 7/8 (3.30-3.31) and 11 (3.32); Felix's name prefixes are stripped wherever they appear."""
    hit = rule_hit(kind, "", name, tier=tier, action=gm.Deny, rule_index=0)
    got = calico.flow_from_proto(goldmane_flow(T, enforced=[hit])).attribution[0]
    assert (got.kind, got.name, got.tier) == (*expect, tier)


@pytest.mark.parametrize(("proto", "port", "expect"), [
    pytest.param("udp", 53, (Protocol.UDP, 53), id="udp"),
    pytest.param("17", 53, (Protocol.UDP, 53), id="udp-number"),
    pytest.param("icmp6", 0, (Protocol.ICMPV6, None), id="icmp6"),
    pytest.param("sctp", 9, (Protocol.SCTP, 9), id="sctp"),
    pytest.param("esp", 0, (Protocol.OTHER, None), id="esp"),
])
def test_protocol_names_and_numbers_map_and_port_zero_is_none(proto: str, port: int,
                                                               expect: tuple[Protocol, int | None]) -> None:
    """Felix's lower-case names or numbers; a 0 port (proto3 unset) is no port."""
    flow = calico.flow_from_proto(goldmane_flow(T, proto=proto, dest_port=port))
    assert (flow.protocol, flow.destination_port) == expect


def test_a_flow_without_a_key_or_times_is_malformed() -> None:
    """No key -> no-key; neither start nor end -> no-time (the counter labels)."""
    with pytest.raises(calico.MalformedFlow) as no_key:
        calico.flow_from_proto(gm.Flow(start_time=T, end_time=T + 15))
    assert no_key.value.reason == calico.NO_KEY
    pb = goldmane_flow(T)
    pb.start_time = pb.end_time = 0
    with pytest.raises(calico.MalformedFlow) as no_time:
        calico.flow_from_proto(pb)
    assert no_time.value.reason == calico.NO_TIME


def test_felix_flows_carry_the_node_they_came_from() -> None:
    """The socket source passes its node name; Goldmane flows have none."""
    assert calico.flow_from_proto(default_deny_flow(T), node="node-2").node == "node-2"


# --- flow-log strings -----------------------------------------------------------------

K8S_DEFAULT_DENY = PolicyHit(name="ledger", namespace="payments", kind="NetworkPolicy", action="end-of-tier-deny",
                             tier="default", trigger="payments/ledger")


@pytest.mark.parametrize(("text", "expect"), [
    pytest.param("0|default|payments/knp.default.ledger|deny|-1", K8S_DEFAULT_DENY, id="knp-eot-3.31"),
    pytest.param("0|default|knp:payments/ledger|deny|-1", K8S_DEFAULT_DENY, id="knp-eot-3.32"),
    pytest.param("0|security|security.block-db|deny|2",
                 PolicyHit(name="block-db", kind="GlobalNetworkPolicy", rule_index=2, tier="security"),
                 id="gnp-rule-3.31"),
    pytest.param("0|security|gnp:block-db|deny|2",
                 PolicyHit(name="block-db", kind="GlobalNetworkPolicy", rule_index=2, tier="security"),
                 id="gnp-rule-3.32"),
    pytest.param("1|default|policy-demo/default.access-nginx|allow|2",
                 PolicyHit(name="access-nginx", namespace="policy-demo", kind="CalicoNetworkPolicy", action="allow",
                           rule_index=2, tier="default"), id="np-allow"),
    pytest.param("1|tier2|snp:default/tier2.np2-1|deny|-1",
                 PolicyHit(name="tier2.np2-1", namespace="default", kind="StagedNetworkPolicy",
                           action="end-of-tier-deny", tier="tier2", trigger="default/tier2.np2-1", staged=True),
                 id="snp-eot-3.32"),
    pytest.param("0|default|payments/staged:knp.default.ledger|deny|-1",
                 PolicyHit(name="ledger", namespace="payments", kind="StagedKubernetesNetworkPolicy",
                           action="end-of-tier-deny", tier="default", trigger="payments/ledger", staged=True),
                 id="sknp-eot-3.31"),
    pytest.param("3|adminnetworkpolicy|kanp.adminnetworkpolicy.tenants|pass|4",
                 PolicyHit(name="tenants", kind="AdminNetworkPolicy", action="pass", rule_index=4,
                           tier="adminnetworkpolicy"), id="anp-pass"),
    pytest.param("0|kube-admin|kcnp:pass-ingress|pass|0",
                 PolicyHit(name="pass-ingress", kind="ClusterNetworkPolicy", action="pass", rule_index=0,
                           tier="kube-admin"), id="cnp-pass"),
    pytest.param("1|__PROFILE__|pro:kns.default|allow|0",
                 PolicyHit(name="kns.default", kind="Profile", action="allow", rule_index=0), id="profile-3.32"),
    pytest.param("0|__PROFILE__|__PROFILE__.kns.maintenance-server|allow|0",
                 PolicyHit(name="kns.maintenance-server", kind="Profile", action="allow", rule_index=0),
                 id="profile-3.31"),
    pytest.param("0|tier1|ns1/tier1.policy1|deny|-2",
                 PolicyHit(name="policy1", namespace="ns1", kind="CalicoNetworkPolicy", tier="tier1"),
                 id="unknown-rule-index"),
])
def test_policy_strings_of_every_version_decode_to_the_same_hit(text: str, expect: PolicyHit) -> None:
    """Felix's <index>|<tier>|<name part>|<action>|<rule> in the 3.30/3.31, 3.32 and Enterprise spellings."""
    assert calico.hit_from_string(text)[1] == expect


@pytest.mark.parametrize("text", ["0|default|x|deny", "0|default|x|log|0", "a|default|x|deny|0"])
def test_a_broken_policy_string_is_a_bad_field(text: str) -> None:
    """Wrong field count, the Log action (never in flow logs), or non-numeric indices."""
    with pytest.raises(calico.MalformedFlow) as exc:
        calico.hit_from_string(text)
    assert exc.value.reason == calico.BAD_FIELD


# --- Enterprise flow logs and the shared fixtures ------------------------------------------


def test_the_docs_example_with_its_trailing_comma_is_reported_naming_the_line(shared_dir: Path) -> None:
    """Rejected on purpose (Felix writes valid JSON): the error names the line of the trailing comma."""
    text = (shared_dir / DATATYPES).read_text(encoding="utf-8")
    comma_line = next(i for i, line in enumerate(text.splitlines(), start=1)
                      if line.rstrip().endswith(",") and text.splitlines()[i].strip() == "]")
    records = list(calico.records_from_flow_log(text))
    assert records == [calico.BadRecord(comma_line, f"not-json: trailing comma before ']' (line {comma_line}); "
                                                    "JSON allows none")]


def test_the_docs_example_without_the_comma_reads_with_its_policies(shared_dir: Path) -> None:
    """Once repaired: an allowed, dst-reported flow; pass then allow enforced, the staged deny kept as staged."""
    lines = (shared_dir / DATATYPES).read_text(encoding="utf-8").splitlines()
    fixed = "\n".join(line.rstrip().removesuffix(",") if i + 1 < len(lines) and lines[i + 1].strip() == "]" else line
                      for i, line in enumerate(lines))
    (flow,) = calico.records_from_flow_log(fixed)
    assert isinstance(flow, model.Flow)
    assert (flow.verdict, flow.direction, flow.time_ns, flow.node) == (
        Verdict.FORWARDED, Direction.INGRESS, 1597166383 * S, "bz-n8kf-kadm-node-1")
    assert (flow.source.pod, flow.source.pod_prefix, flow.source.ip, flow.source_port) == (
        "access-6b687c8dcb-zn5s2", "access-6b687c8dcb-", "192.168.47.9", 42106)
    assert dict(flow.destination.labels) == {"pod-template-hash": "86c57db685", "app": "nginx"}
    assert (flow.packets, flow.connections) == (11, 1)
    assert [(h.kind, h.namespace, h.name, h.action, h.rule_index, h.staged) for h in flow.attribution] == [
        ("CalicoNetworkPolicy", "ns1", "policy1", "pass", 3, False),
        ("CalicoNetworkPolicy", "policy-demo", "access-nginx", "allow", 2, False),
        ("StagedNetworkPolicy", "ns2", "tier1.policy1", "deny", 1, True),
    ]


def test_the_host_forwarded_examples_have_no_time_and_are_reported_as_such(shared_dir: Path) -> None:
    """The docs' trimmed records carry no start/end time: each is a no-time record on its own line."""
    records = list(calico.records_from_flow_log((shared_dir / FORWARDED).read_text(encoding="utf-8")))
    assert [(r.line_no, r.reason.split(":")[0]) for r in records if isinstance(r, calico.BadRecord)] == [
        (1, "no-time"), (2, "no-time")]


def test_the_host_forwarded_examples_read_with_their_reporters_once_timed(shared_dir: Path) -> None:
    """'dst, fwd' is measured at the destination (ingress); 'fwd' alone is transit (no direction); pub is WORLD."""
    lines = (shared_dir / FORWARDED).read_text(encoding="utf-8").splitlines()
    first, second = (calico.flow_from_flow_log({**json.loads(line), "end_time": T}) for line in lines)
    assert (first.direction, first.destination.pod, first.destination.ip, first.node) == (
        Direction.INGRESS, "maintenance-server-gkh45", "192.168.1.10", "my-host")
    assert first.attribution == (PolicyHit(name="kns.maintenance-server", kind="Profile", action="allow",
                                           rule_index=0),)
    assert (second.direction, second.source.kind, second.source.namespace, second.source.ip) == (
        Direction.UNKNOWN, EndpointKind.WORLD, None, "34.0.113.100")
    assert second.attribution == ()  # transit policies decide nothing for an endpoint


def test_an_enterprise_deny_after_a_pass_is_an_end_of_tier_drop_of_a_calico_policy() -> None:
    """The shape of the real deny record described in the reference: pass in tier security, then end of tier."""
    record = {
        "start_time": T, "end_time": T + 300, "action": "deny", "reporter": "dst", "proto": "tcp", "dest_port": 5050,
        "source_name": "multitool", "source_name_aggr": "multitool", "source_namespace": "default",
        "source_type": "wep", "source_ip": "10.0.0.7", "source_port": None,
        "dest_name": "checkoutservice-598d5b586d-wsvmz", "dest_name_aggr": "checkoutservice-598d5b586d-*",
        "dest_namespace": "hipstershop", "dest_type": "wep", "dest_ip": "10.0.1.9",
        "policies": {"enforced_policies": [
            "1|app-hipstershop|hipstershop/app-hipstershop.checkoutservice|deny|-1",
            "0|security|security.pass-to-apps|pass|0"]},
        "packets_in": 5, "packets_out": 0, "num_flows": 1,
    }
    flow = calico.flow_from_flow_log(record)
    assert (flow.verdict, flow.drop_kind, flow.direction) == (Verdict.DROPPED, DropKind.POLICY_DENIED,
                                                              Direction.INGRESS)
    assert [h.action for h in flow.attribution] == ["pass", "end-of-tier-deny"]
    assert flow.attribution[1] == PolicyHit(name="checkoutservice", namespace="hipstershop",
                                            kind="CalicoNetworkPolicy", action="end-of-tier-deny",
                                            tier="app-hipstershop", trigger="hipstershop/checkoutservice")
    assert (flow.source.pod, flow.source.pod_prefix, flow.packets, flow.connections) == ("multitool", None, 5, 1)


def test_a_truncated_line_is_reported_and_the_next_line_still_reads() -> None:
    """JSON lines: the broken one names its line, reading resumes at the next record."""
    good = json.dumps({"end_time": T, "action": "deny", "reporter": "src", "proto": "udp", "dest_port": 53})
    records = list(calico.records_from_flow_log('{"end_time": 1, "action": "de\n' + good + "\n"))
    assert isinstance(records[0], calico.BadRecord)
    assert records[0].line_no in (1, 2)
    assert isinstance(records[1], model.Flow)
    assert records[1].direction is Direction.EGRESS


def test_a_flow_log_record_with_a_wrong_type_names_the_field() -> None:
    """A string where a number belongs: bad-field naming the key, with the record's line."""
    records = list(calico.records_from_flow_log('\n{"end_time": "soon"}\n'))
    assert records == [calico.BadRecord(2, "bad-field: end_time: expected an integer, got 'soon'")]
