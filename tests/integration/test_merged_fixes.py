"""The demo's `/pods/pod-b/drops`: one change per policy that admits every drop shown.

The reproduction: the two fixes shown for pod-b were each a full `kubectl
apply` of backend/default-deny made from the same starting state, so
applying both in the order shown brought the first drop back. The answer
now carries the fixes of all its drops merged, one change per policy; here
it is read over real HTTP from the daemon fed by a real Hubble gRPC server,
and applied to the incident's objects both as the JSON patch and as the
full object.
"""

from __future__ import annotations

from typing import Any

from drop_explainer.explain import backends
from drop_explainer.explain.explaining import flow_connection
from drop_explainer.explain.model import BlastRadius, Fix
from drop_explainer.flows import codec
from drop_explainer.policy.engine import Connection, Engine
from drop_explainer.testing.hubble_server import FakeHubbleServer, load_responses
from tests.daemon_support import eventually, get_json, http_get, run_settings
from tests.integration.test_daemon import FLOWS, INCIDENT, _with_history, incident_daemon
from tests.unit.explain.test_fixes_work import _build, _docs, apply_fixes, brute_force, intended


async def _merged(port: int) -> Any:
    status, body = await get_json(port, "/pods/pod-b/drops")
    return body if status == 200 and len(body["drops"]) == 3 and "fixes_for_all" in body else None


def _fix(data: dict[str, Any]) -> Fix:
    return Fix(data["kind"], data["summary"], data["apply"], tuple(data.get("objects", ())),
               {d["namespace"]: d["labels"] for d in data.get("namespace_labels", [])}, data["verified"],
               patch=tuple(data.get("patch", ())), target=data.get("target", ""))


def _with_node_1(responses: list[Any]) -> list[Any]:
    """The incident's flows plus a drop from node-1 to pod-b's probe port.

    The demo's own probe drop comes from node-2, pod-b's own node, which
    networking/v1 exempts: its fix is a CNI setting (the kubelet-probe trap),
    not a NetworkPolicy change. Node-1 is not exempt: its drop needs an ipBlock
    in backend/default-deny, the same policy pod-a's drop needs a rule in.
    """
    probe = next(r for r in responses if r.flow.IP.source == "172.18.0.12")
    extra = type(probe)()
    extra.CopyFrom(probe)
    extra.flow.IP.source = "172.18.0.11"
    extra.flow.source.identity = 6
    del extra.flow.source.labels[:]
    extra.flow.source.labels.append("reserved:remote-node")
    extra.flow.l4.TCP.source_port = 52999
    return [*responses, extra]


async def test_the_demo_pod_b_answer_needs_one_policy_change_and_names_the_probe_drops_cni_setting() -> None:
    """The demo's pod-b: one NetworkPolicy change (pod-a's drop); the probe drop from its own node is the CNI's."""
    async with FakeHubbleServer(load_responses(FLOWS), node_name="node-2") as hubble:
        settings = run_settings("--hubble-target", hubble.target, "--store-path", ":memory:")
        async with incident_daemon(_with_history(settings)) as daemon:
            port = daemon.port or 0

            async def both() -> Any:
                status, body = await get_json(port, "/pods/pod-b/drops")
                return body if status == 200 and len(body["drops"]) == 2 else None

            body = await eventually(both)
            _, text = await http_get(port, "/pods/pod-b/drops")
    assert body, "pod-b's two drops never showed"
    by_source = {d["signature"]["source_workload"]: d for d in body["drops"]}
    pod_a, probe = by_source["frontend/pod-a"], by_source["172.18.0.12"]
    assert [f["target"] for f in pod_a["explanation"]["fixes"]] == ["networkpolicy backend/default-deny"]
    assert pod_a["explanation"]["fixes"][0]["verified"]
    assert probe["explanation"]["fixes"] == []  # no NetworkPolicy change admits what the spec already exempts
    assert "kubelet-probe" in probe["signature"]["traps"]
    assert "fromEntities: [host]" in text  # the fix on Cilium, the profile the Hubble source implies
    assert "fixes_for_all" not in body  # one policy change only: pod-a's own fix is the change


async def test_pod_b_drops_answer_gives_one_change_per_policy_that_fixes_every_drop() -> None:
    """Pod-a's and node-1's drops of pod-b are admitted by one patch of backend/default-deny, in either form."""
    async with FakeHubbleServer(_with_node_1(load_responses(FLOWS)), node_name="node-2") as hubble:
        # An ipBlock matches a node on Cilium only with policy-cidr-match-mode=nodes (docs/profiles.md).
        settings = run_settings("--hubble-target", hubble.target, "--store-path", ":memory:",
                                "--cni", "cilium,policy-cidr-match-mode=nodes")
        async with incident_daemon(_with_history(settings)) as daemon:
            assert daemon.port is not None
            body = await eventually(lambda: _merged(daemon.port or 0))
            status, text = await http_get(daemon.port, "/pods/pod-b/drops")
    assert status == 200
    merged = [_fix(f) for f in body["fixes_for_all"]]
    assert [f.target for f in merged] == ["networkpolicy backend/default-deny"]
    assert merged[0].verified
    # The probe drop from pod-b's own node is the CNI's setting, not a policy change: not in the merge.
    fixable = [d for d in body["drops"] if d["explanation"]["fixes"]]
    assert sorted(d["signature"]["source_workload"] for d in fixable) == ["172.18.0.11", "frontend/pod-a"]
    assert sorted(body["fixes_for_all_drops"]) == sorted(d["id"] for d in fixable)
    assert "apply this one change" in text
    assert "Fix: see the one change for all drops shown, at the end." in text
    assert [op["path"] for op in merged[0].patch] == ["/spec/ingress/-", "/spec/ingress/-"]
    raw = _docs((INCIDENT / "cluster.yaml").read_text())
    for form in ("patch", "full"):
        after = apply_fixes(raw, merged, form=form)
        engine = Engine(after)
        for drop in fixable:
            conn, _ = flow_connection(engine, codec.flow_from_json(drop["explanation"]["flow"]))
            assert engine.evaluate(Connection(conn.source, conn.destination, conn.port, conn.protocol)).allowed, \
                (form, drop["signature"])
    # The merged change's blast radius is the brute-force count of what it newly allows.
    before = _build(raw)
    targets = [backends.translate(before, flow_connection(Engine(before), codec.flow_from_json(
        d["explanation"]["flow"]))[0]) for d in fixable]
    radius = BlastRadius(**body["fixes_for_all"][0]["blast_radius"])
    answer = [c for t in targets for c in t.connections]
    assert radius.count == brute_force(before, apply_fixes(raw, merged, form="full"), answer,
                                       intended(before, targets))
    # Each drop's own patch appends: applied one after the other they no longer undo each other,
    # where their full objects (the reproduction) do: the last one written drops the first one's rule.
    own = [_fix(f) for d in fixable for f in d["explanation"]["fixes"]]
    for form, both in (("patch", True), ("full", False)):
        engine = Engine(apply_fixes(raw, own, form=form))
        allowed = [engine.evaluate(flow_connection(engine, codec.flow_from_json(d["explanation"]["flow"]))[0]).allowed
                   for d in fixable]
        assert all(allowed) is both, (form, allowed)
