"""Every fix the engine proposes in the test states works, in both of its forms, and opens what it says.

For every connection between the endpoints of each test state that the
policies deny, the proposed fixes are applied to the raw objects the way a
user would: the JSON patch with RFC 6902 semantics (`kubectl patch
--type=json`), and separately the full object (`kubectl apply`). Either way,
every connection of the answer, as the datapath sees it after Service
translation, must then be allowed, and the blast radius must equal a count
by brute force over every pair of endpoints. The same holds for the merged
fixes of several drops taken together.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import backends, blast, combining
from drop_explainer.explain.explaining import UnexplainableFlow, explain_connection, explain_flow
from drop_explainer.explain.model import Explanation, Fix
from drop_explainer.flows.model import Verdict
from drop_explainer.policy import endpoints
from drop_explainer.policy.endpoints import Subject
from drop_explainer.policy.engine import Connection, Engine
from drop_explainer.sources import flowfiles
from tests.unit.explain import test_traps

REPO = Path(__file__).resolve().parents[3]
STORIES = REPO / "tests" / "fixtures" / "stories"
INCIDENT = REPO / "daemon" / "drop_explainer" / "examples" / "incident" / "cluster.yaml"
FLOW_FILES = [*sorted(STORIES.glob("*/flows.jsonl")), INCIDENT.parent / "hubble-flows.jsonl"]


def _docs(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":
            out += [d for d in doc["items"] if isinstance(d, dict)]
        else:
            out.append(doc)
    return out


def _states() -> Iterator[Any]:
    base = (STORIES / "_base" / "cluster.yaml").read_text()
    for story in sorted(p for p in STORIES.iterdir() if p.is_dir() and not p.name.startswith("_")):
        yield pytest.param(_docs(base) + _docs((story / "policies.yaml").read_text()), id=f"story-{story.name}")
    yield pytest.param(_docs(INCIDENT.read_text()), id="incident")
    yield pytest.param(_docs((REPO / "tests" / "fixtures" / "starwars" / "state.yaml").read_text()), id="starwars")
    seen: set[str] = set()
    for case in test_traps.TRAP_CASES:
        policies = case.values[2]
        assert isinstance(policies, str)
        if policies not in seen:
            seen.add(policies)
            yield pytest.param(_docs(test_traps.BASE) + _docs(policies), id=f"traps-{case.id}")


def _build(raw: Sequence[Mapping[str, Any]]) -> ClusterState:
    return ClusterState.build(parse_documents("state", json.dumps({"kind": "List", "items": list(raw)})))


def json_patch(doc: dict[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove/test, as the API server applies them for kubectl patch --type=json."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "replace":
            if isinstance(node, list):
                node[int(last)] = copy.deepcopy(op["value"])
            else:
                assert last in node, f"replace of a missing member {op['path']}"
                node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            assert op["op"] == "test"
            assert (node[int(last)] if isinstance(node, list) else node[last]) == op["value"]
    return doc


def _key(doc: Mapping[str, Any]) -> tuple[str, str]:
    meta = doc.get("metadata", {})
    return str(doc.get("kind")), f"{meta.get('namespace', 'default')}/{meta.get('name')}"


def apply_fixes(raw: Sequence[Mapping[str, Any]], fixes: Sequence[Fix], *, form: str) -> ClusterState:
    """The raw objects after the fixes: patches on the stored objects, or the full objects written over them."""
    objs = {_key(d): copy.deepcopy(dict(d)) for d in raw}
    for fix in fixes:
        for ns, labels in fix.namespace_labels.items():
            doc = objs.setdefault(("Namespace", f"default/{ns}"), {"kind": "Namespace", "metadata": {"name": ns}})
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        for obj in fix.objects:
            key = _key(obj)
            if form == "patch" and key in objs:
                assert fix.patch, "an edited policy comes with its patch"
                objs[key] = json_patch(objs[key], fix.patch)
            else:
                assert form == "full" or not fix.patch, "a new policy is created whole"
                objs[key] = copy.deepcopy(dict(obj))
    return _build(list(objs.values()))


def _name(s: Subject) -> str:
    return s.pod.key if s.pod is not None and s.is_pod else str(s.ip)


def _conn_key(c: Connection) -> tuple[str, str, int, str]:
    return _name(c.source), _name(c.destination), c.port, c.protocol


def intended(state: ClusterState, targets: Sequence[backends.Target]) -> set[tuple[str, str, int, str]]:
    """What the fixes are for (docs of blast_radius): the connections, every backend of the Service, DNS both ways."""
    out = {_conn_key(c) for t in targets for c in t.connections}
    for t in targets:
        if t.service is None or not t.connections:
            continue
        first = t.connections[0]
        for sp in t.service.ports:
            if t.dns or sp.protocol == first.protocol:
                out |= {(_name(first.source), _name(b), n, sp.protocol)
                        for b, n in backends.backends(state, t.service, sp)}
    return out


def brute_force(before: ClusterState, after: ClusterState, answer: Sequence[Connection],
                skip: set[tuple[str, str, int, str]]) -> int:
    """Every pair of endpoints on every port, before and after: how many are newly allowed."""
    old, new = Engine(before), Engine(after)
    ends: dict[str, tuple[Subject, Subject]] = {}
    for pod in before.pods.values():
        if not pod.host_network and pod.ips:
            ends[pod.key] = (endpoints.pod_subject(before, pod), endpoints.pod_subject(after, after.pods[pod.key]))
    for node in before.nodes.values():
        for kind, addr in node.addresses:
            if kind == "InternalIP":
                ends[addr] = (endpoints.ip_subject(before, addr), endpoints.ip_subject(after, addr))
    for c in answer:
        for s in (c.source, c.destination):
            if s.pod is None and s.ip is not None:
                ends.setdefault(s.ip, (s, s))
    asked = {(c.port, c.protocol) for c in answer}
    count = 0
    for sname, (s0, s1) in ends.items():
        for dname, (d0, d1) in ends.items():
            if sname == dname:
                continue
            ports = set(asked)
            if d1.pod is not None and d1.is_pod:
                ports |= {(p.container_port, p.protocol) for c in d1.pod.containers for p in c.ports}
            for port, proto in ports:
                if (sname, dname, port, proto) in skip:
                    continue
                if new.evaluate(Connection(s1, d1, port, proto)).allowed and \
                        not old.evaluate(Connection(s0, d0, port, proto)).allowed:
                    count += 1
    return count


def _questions(state: ClusterState) -> Iterator[Connection]:
    """Pods and nodes to pods and Service addresses, on every declared and Service port."""
    sources = [endpoints.pod_subject(state, p) for p in state.pods.values() if p.ips or p.host_network]
    sources += [endpoints.ip_subject(state, a) for n in state.nodes.values() for k, a in n.addresses
                if k == "InternalIP"]
    dests: list[tuple[Subject, set[tuple[int, str]]]] = []
    for p in state.pods.values():
        if p.ips and not p.host_network:
            dests.append((endpoints.pod_subject(state, p), {(cp.container_port, cp.protocol) for c in p.containers
                                                            for cp in c.ports} or {(80, "TCP")}))
    for svc in state.services.values():
        for ip in svc.cluster_ips:
            dests.append((endpoints.ip_subject(state, ip), {(sp.port, sp.protocol) for sp in svc.ports}))
    for n in state.nodes.values():
        dests += [(endpoints.ip_subject(state, a), {(6443, "TCP")}) for k, a in n.addresses if k == "InternalIP"]
    dests += [(endpoints.ip_subject(state, "198.51.100.25"), {(443, "TCP")}),
              (endpoints.ip_subject(state, "8.8.8.8"), {(53, "UDP")})]
    for src in sources:
        for dst, ports in dests:
            if src.pod is not None and src.pod is dst.pod:
                continue
            for port, proto in sorted(ports):
                yield Connection(*endpoints.same_family(src, dst), port, proto)


def _check_fixes(raw: list[dict[str, Any]], state: ClusterState, fixes: Sequence[Fix],
                 targets: Sequence[backends.Target]) -> None:
    answer = [c for t in targets for c in t.connections]
    assert fixes
    assert all(f.verified for f in fixes)
    for form in ("patch", "full"):
        after = apply_fixes(raw, fixes, form=form)
        engine = Engine(after)
        for c in answer:
            fresh = Connection(blast.refresh(after, c.source), blast.refresh(after, c.destination), c.port, c.protocol)
            assert engine.evaluate(fresh).allowed, (form, _conn_key(c), [f.summary for f in fixes])
    radius = next(f.blast_radius for f in fixes if f.blast_radius is not None)
    assert not radius.capped
    after = apply_fixes(raw, fixes, form="full")
    assert radius.count == brute_force(state, after, answer, intended(state, targets)), [f.summary for f in fixes]


@pytest.mark.parametrize("raw", list(_states()))
def test_every_proposed_fix_works_in_both_forms_and_its_radius_is_exact(raw: list[dict[str, Any]]) -> None:
    """Patch form and full form each admit every connection of the answer; the radius matches brute force."""
    state = _build(raw)
    engine = Engine(state)
    checked = 0
    by_destination: dict[str, list[Explanation]] = {}
    for conn in _questions(state):
        expl = explain_connection(engine, conn)
        if expl.verdict.allowed or not expl.fixes:
            continue
        target = backends.translate(state, conn)
        _check_fixes(raw, state, expl.fixes, [target])
        by_destination.setdefault(_name(conn.destination), []).append(expl)
        checked += 1
    assert checked > 0
    for path in FLOW_FILES:
        # The recorded flows, as explain --flows reads them (their pods are ghosts in the states they do not fit).
        for flow in flowfiles.read_flows(str(path)):
            if isinstance(flow, flowfiles.MalformedRecord) or flow.verdict is not Verdict.DROPPED:
                continue
            try:
                expl = explain_flow(engine, flow)
            except UnexplainableFlow:
                continue
            if expl.fixes and not expl.verdict.allowed:
                _check_fixes(raw, state, expl.fixes, [backends.translate(state, expl.connection)])
                by_destination.setdefault(_name(expl.connection.destination), []).append(expl)
    # All the drops of one destination, as /pods/NAME/drops lists them: the merged fixes admit every one.
    for group in by_destination.values():
        merged = combining.for_explanations(engine, group)
        if merged:
            targets = [backends.translate(state, e.connection) for e in group]
            _check_fixes(raw, state, merged, targets)
            keys = [f.target for f in merged]
            assert len(keys) == len(set(keys)), "one change per object"
