"""Recorded Hubble drops through the real gRPC stream into the explainer, restarts included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hubble_helpers import Collector, fast_settings

from drop_explainer.cluster.loading import load_state
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.flows import model
from drop_explainer.hubble_pb import observer_pb2
from drop_explainer.pipeline import Pipeline, StaticState
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks.store import DropStore
from drop_explainer.sources import flowfiles
from drop_explainer.testing.hubble_server import FakeHubbleServer, load_responses, policy_denied_syn

S = 1_000_000_000
T0 = 1_750_000_000 * S
STARWARS = Path(__file__).resolve().parents[2] / "fixtures" / "starwars" / "state.yaml"
Collect = Callable[..., Collector]


def test_the_real_policy_denied_syn_is_explained_naming_the_policy(shared_dir: Path) -> None:
    """The field-masked POLICY_DENIED line of Cilium's docs, with a matching state, names default/rule1."""
    items = list(flowfiles.read_flows(shared_dir / "fixtures/hubble/cilium-docs_hubble-export-example.jsonl"))
    flows = [f for f in items if isinstance(f, model.Flow) and f.drop_kind is model.DropKind.POLICY_DENIED]
    assert len(flows) == 1
    expl = explain_flow(Engine(load_state(STARWARS)), flows[0])
    assert expl.agreement.agrees is True
    assert [p.key for p in expl.verdict.ingress.policies] == ["default/rule1"]
    assert expl.closest is not None
    assert [f.message for f in expl.closest.failures] == [
        "pod default/xwing has labels {app.kubernetes.io/name: xwing, class: xwing, org: alliance}; "
        "ingress rule 0 of default/rule1 needs org=empire"]
    assert expl.fixes[0].verified


async def test_streamed_drops_are_explained_once_each_across_a_server_restart(
        shared_dir: Path, collect: Collect) -> None:
    """Server -> client -> explainer -> store: a restart mid-stream neither loses nor double counts a drop."""
    history = load_responses(shared_dir / "fixtures/hubble/cilium-docs_hubble-export-example.jsonl")
    pipeline = Pipeline(StaticState(load_state(STARWARS)), store=DropStore(":memory:"))
    async with FakeHubbleServer(history) as server:
        collector = collect(fast_settings(server.target, initial_number=10))
        await collector.until(lambda: len(collector.flows) == 2)
        for i in range(40):
            server.push(observer_pb2.GetFlowsResponse(flow=policy_denied_syn(T0 + i * S, source_port=30000 + i)))
        await collector.until(lambda: len(collector.flows) == 42)
        await server.stop()
        await collector.until(lambda: not collector.source.stats.connected)
        for i in range(40, 80):
            server.push(observer_pb2.GetFlowsResponse(flow=policy_denied_syn(T0 + i * S, source_port=30000 + i)))
        await server.start()
        await collector.until(lambda: len(collector.flows) >= 82)
    drops = [d for d in map(pipeline.process, collector.flows) if d is not None]
    assert len(collector.flows) == 82
    assert collector.source.stats.duplicates > 0  # the resume replayed some, and they were dropped
    assert pipeline.store is not None
    records = pipeline.store.query()  # type: ignore[attr-defined]
    by_reason = {tuple(r.policies): r for r in records}
    assert by_reason[("default/rule1",)].flows == 81  # 80 streamed + the recorded docs line
    assert by_reason[("default/rule1",)].connections == 81
    assert sum(1 for d in drops if d.new) == len(records) == 2  # and the docs' INVALID_SOURCE_IP drop
    other = by_reason[()]
    assert "INVALID_SOURCE_IP" in other.explanation_text
    assert all("default/rule1" in d.explanation.headline for d in drops if d.flow.drop_kind.value == "policy-denied")
