"""Redacting the other side of a drop: by allowlist, idempotent, and nothing of the hidden side in text or JSON."""

from __future__ import annotations

import json
from typing import Any

from drop_explainer import demo
from drop_explainer.api import visibility
from drop_explainer.cluster.loading import load_state
from drop_explainer.explain import explaining, rendering
from drop_explainer.pipeline import StaticState
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine
from tests.daemon_support import eventually, run_settings, running

HIDDEN_MARKS = ("10.244.2.20", "default-deny", "app: backend", "kube-system")
"""backend/pod-b's IP, backend's policy, backend's labels, and what backend's rule admits."""


def _drop() -> dict[str, Any]:
    """frontend/pod-a -> backend/pod-b as the API renders it, explained by the real engine on the incident."""
    engine = Engine(load_state(demo.incident_dir()))
    query = queries.Query("frontend/pod-a", "backend/pod-b", 8080, "TCP")
    expl = explaining.explain_connection(engine, queries.connection(engine.state, query))
    return {"id": "0123456789abcdef",
            "signature": {"source_workload": "frontend/pod-a", "destination": "backend/pod-b", "port": 8080,
                          "protocol": "TCP", "direction": "ingress", "policies": ["backend/default-deny"],
                          "traps": []},
            "flows": 3, "connections": 1, "nodes": ["node-2"], "reported_by": "node-2",
            "explanation": rendering.explanation_json(expl), "explanation_text": rendering.explanation_text(expl),
            "samples": [{"source": {"labels": ["k8s:app=frontend"]}}]}


def test_a_caller_of_one_side_keeps_the_facts_and_loses_the_other_sides_details() -> None:
    """Who, to whom, port, counts and the verdict stay; backend's IP, policy, rules and fixes go."""
    d = _drop()
    assert all(mark in json.dumps(d) for mark in HIDDEN_MARKS[:2]), "the unredacted drop has them"
    out = visibility.redact_drop(d, frozenset({"frontend"}))
    assert (out["signature"]["source_workload"], out["signature"]["destination"]) == ("frontend/pod-a",
                                                                                        "backend/pod-b")
    assert (out["flows"], out["connections"], out["nodes"]) == (3, 1, ["node-2"])
    assert out["explanation"]["allowed"] is False
    assert out["explanation"]["withheld"]["namespaces"] == ["backend"]
    assert "samples" not in out
    text = json.dumps(out)
    for mark in HIDDEN_MARKS:
        assert mark not in text, mark
    assert "Withheld:" in out["explanation_text"]
    assert "The ingress side (a namespace you may not see) denies this connection." in out["explanation_text"]


def test_redaction_is_idempotent_and_a_two_sided_caller_sees_everything() -> None:
    """A peer's redacted answer redacted again is unchanged; seeing both namespaces changes nothing."""
    d = _drop()
    once = visibility.redact_drop(d, frozenset({"frontend"}))
    assert visibility.redact_drop(once, frozenset({"frontend"})) == once
    assert visibility.redact_drop(d, frozenset({"frontend", "backend"})) == d
    assert visibility.redact_drop(d, None) == d


def test_an_unknown_explanation_field_stays_hidden() -> None:
    """Allowlist: a field added to explanations later is not shown to a one-sided caller by accident."""
    d = _drop()
    d["explanation"]["new_field_with_backend_labels"] = {"app": "backend"}
    out = visibility.redact_drop(d, frozenset({"frontend"}))
    assert "new_field_with_backend_labels" not in out["explanation"]


def test_whatif_needs_one_visible_end() -> None:
    """Neither end visible, or no pod end at all: None (the API answers 403)."""
    engine = Engine(load_state(demo.incident_dir()))
    query = queries.Query("frontend/pod-a", "backend/pod-b", 8080, "TCP")
    conn = queries.connection(engine.state, query)
    data = queries.verdict_json(query, conn, engine.evaluate(conn))
    assert visibility.redact_whatif(data, frozenset({"shop"})) is None
    shown = visibility.redact_whatif(data, frozenset({"backend"}))
    assert shown is not None
    assert shown["withheld"]["namespaces"] == ["frontend"]
    assert shown["egress"]["withheld"] is True, "the source side's egress policies are frontend's"
    assert "ip" not in shown["source"]
    assert visibility.redact_whatif(data, None) == data


async def test_the_store_filter_keeps_drops_with_either_end_in_the_callers_namespaces() -> None:
    """store.query(namespaces=...) matches the source end too, not only the affected pod."""
    settings = run_settings("--source", "replay", "--replay-file", str(demo.incident_dir() / "hubble-flows.jsonl"),
                            "--store-path", ":memory:")
    async with running(settings, StaticState(load_state(demo.incident_dir()))) as d:
        assert await eventually(lambda: len(d.store.query()) == 2), "the replay was not recorded"
        assert [r.source_workload for r in d.store.query(namespaces={"frontend"})] == ["frontend/pod-a"]
        assert sorted(r.source_workload for r in d.store.query(namespaces={"backend"})) == ["172.18.0.12",
                                                                                          "frontend/pod-a"]
        assert d.store.query(namespaces=set()) == []
