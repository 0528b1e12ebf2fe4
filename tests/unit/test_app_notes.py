"""The daemon says when a drop began right after a deciding policy changed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from drop_explainer.app import policy_history_note
from drop_explainer.cli import example_state_path
from drop_explainer.cluster.live import PolicyChange
from drop_explainer.cluster.loading import load_state
from drop_explainer.cluster.watching import EventType
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.policy.engine import Engine

T = 1_764_122_400.0


@dataclass
class History:
    """Stands in for LiveState's policy history (the real one is fed by watches in integration tests)."""

    changes: tuple[PolicyChange, ...]

    def policy_changes(self, since: float, *, policies: Collection[str] | None = None) -> tuple[PolicyChange, ...]:
        return tuple(c for c in self.changes if c.time >= since and (policies is None or c.key in policies))


def _drop(at: float) -> Flow:
    return Flow(time_ns=int(at * 1e9), verdict=Verdict.DROPPED, direction=Direction.INGRESS,
                source=Endpoint(EndpointKind.POD, "10.244.1.10", "frontend", "pod-a", {"app": "frontend"}),
                destination=Endpoint(EndpointKind.POD, "10.244.2.20", "backend", "pod-b", {"app": "backend"}),
                destination_port=8080, drop_kind=DropKind.POLICY_DENIED, tcp_flags=frozenset({"SYN"}))


def test_a_drop_soon_after_the_deciding_policy_was_created_says_so() -> None:
    """Created 4 s before the drop: the note names the policy, the delay and the resourceVersion."""
    engine = Engine(load_state(example_state_path()))
    live = History((PolicyChange(T - 4, EventType.ADDED, "backend/default-deny", "3001"),))
    expl = policy_history_note(live)(_drop(T), explain_flow(engine, _drop(T)))
    assert "drops began 4 s after backend/default-deny was created (resourceVersion 3001)" in expl.notes


def test_changes_of_other_policies_or_long_ago_are_not_blamed() -> None:
    """Another policy's change, or one older than the window, adds no note."""
    engine = Engine(load_state(example_state_path()))
    live = History((PolicyChange(T - 4, EventType.ADDED, "other/policy", "1"),
                    PolicyChange(T - 3600, EventType.MODIFIED, "backend/default-deny", "2")))
    plain = explain_flow(engine, _drop(T))
    assert policy_history_note(live)(_drop(T), plain).notes == plain.notes
