"""Prometheus metrics: affected-pod labels, connection counts, deleted pods, series bounds, scrape-time values."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from sink_fixtures import FakeClock, MakeDrop

from drop_explainer.explain.cache import ExplanationCache
from drop_explainer.flows.model import DropKind
from drop_explainer.pipeline import Admission
from drop_explainer.sinks.metrics import MetricsSink
from drop_explainer.sinks.store import MEMORY, DropStore
from drop_explainer.sources import resuming

DENY = {"direction": "ingress", "reason": "policy-denied", "policy": "api/default-deny", "trap": ""}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sink(registry: CollectorRegistry, clock: FakeClock) -> MetricsSink:
    return MetricsSink(registry, max_series=10, deleted_pod_grace_seconds=300, clock=clock)


def drops(registry: CollectorRegistry, name: str = "drop_explainer_drops_total", **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_ingress_drop_is_counted_on_the_destination_pod(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop) -> None:
    """Every label comes from the drop: destination pod, direction, reason, first policy, first trap."""
    sink.handle(make_drop(policies=("api/a", "api/b"), traps=("named-port", "x")))
    sink.handle(make_drop(policies=("api/a", "api/b"), traps=("named-port", "x")))
    assert drops(registry, namespace="api", pod="pod-b", direction="ingress", reason="policy-denied",
                 policy="api/a", trap="named-port") == 2


def test_egress_drop_is_counted_on_the_source_pod(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop) -> None:
    """An egress drop happened to the pod that sent it."""
    sink.handle(make_drop(source="web/client-7f9", destination="world", direction="egress", policies=()))
    assert drops(registry, namespace="web", pod="client-7f9", direction="egress", reason="policy-denied",
                 policy="", trap="") == 1


@pytest.mark.parametrize("kind", ["world", "host", "remote-node"])
def test_drop_to_a_non_pod_is_labelled_with_its_kind(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop, kind: str) -> None:
    """An end that is not a pod has namespace "" and pod = its kind, never its address."""
    sink.handle(make_drop(destination=kind))
    assert drops(registry, namespace="", pod=kind, **DENY) == 1


def test_reason_is_the_flows_drop_kind(registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop) -> None:
    """An explicit deny and a datapath drop are told apart from the default deny."""
    sink.handle(make_drop(drop_kind=DropKind.POLICY_DENY))
    sink.handle(make_drop(drop_kind=DropKind.OTHER))
    labels = {**DENY, "namespace": "api", "pod": "pod-b"}
    assert drops(registry, **(labels | {"reason": "policy-deny"})) == 1
    assert drops(registry, **(labels | {"reason": "other"})) == 1
    assert drops(registry, **labels) is None


def test_connections_are_counted_from_aggregated_flows(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop) -> None:
    """A Calico record standing for 40 connections adds 40 connections and one flow."""
    sink.handle(make_drop(connections=40, packets=120))
    sink.handle(make_drop())
    labels = {**DENY, "namespace": "api", "pod": "pod-b"}
    assert drops(registry, "drop_explainer_drop_connections_total", **labels) == 41
    assert drops(registry, **labels) == 2


def test_new_signature_counter_counts_only_new_drops(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop) -> None:
    """Alerting reads this: one increment for the first sight, none for repeats, no reason label."""
    sink.handle(make_drop(new=True))
    sink.handle(make_drop())
    sink.handle(make_drop())
    assert drops(registry, "drop_explainer_new_drop_signatures_total", namespace="api", workload="pod-b", pod="pod-b",
                 direction="ingress", policy="api/default-deny", trap="") == 1


def test_deleted_pods_series_are_removed_after_the_grace_and_not_before(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop, clock: FakeClock) -> None:
    """Within the grace the last value stays scrapable; after it, every series of the pod is gone."""
    sink.handle(make_drop(new=True))
    sink.handle(make_drop(destination="api/pod-c"))
    sink.pod_deleted("api", "pod-b")
    clock.now += 299
    sink.handle(make_drop(destination="api/pod-c"))
    assert drops(registry, namespace="api", pod="pod-b", **DENY) == 1
    clock.now += 2
    sink.handle(make_drop(destination="api/pod-c"))
    text = generate_latest(registry).decode()
    assert 'pod="pod-b"' not in text
    assert drops(registry, namespace="api", pod="pod-c", **DENY) == 3
    assert sink.series == 1


def test_sweep_removes_deleted_pods_without_new_drops(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop, clock: FakeClock) -> None:
    """A quiet daemon still forgets deleted pods when sweep() is called."""
    sink.handle(make_drop())
    sink.pod_deleted("api", "pod-b")
    assert sink.sweep() == 0
    clock.now += 301
    assert sink.sweep() == 1
    assert drops(registry, namespace="api", pod="pod-b", **DENY) is None


def test_label_sets_beyond_max_series_fold_into_pod_other(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop) -> None:
    """The eleventh pod's drops count under pod="_other" and in the folded counter."""
    for i in range(12):
        sink.handle(make_drop(destination=f"api/pod-{i}", connections=2))
    assert drops(registry, namespace="api", pod="pod-9", **DENY) == 1
    assert drops(registry, namespace="api", pod="pod-10", **DENY) is None
    assert drops(registry, namespace="api", pod="_other", **DENY) == 2
    assert drops(registry, "drop_explainer_drop_connections_total", namespace="api", pod="_other", **DENY) == 4
    assert registry.get_sample_value("drop_explainer_series_folded_total") == 2
    assert sink.series == 11


def test_series_stay_bounded_beyond_the_headroom(registry: CollectorRegistry, make_drop: MakeDrop) -> None:
    """Past max_series + 10 %, even namespace and policy fold, so the count of series has a hard bound."""
    sink = MetricsSink(registry, max_series=10)
    for i in range(50):
        sink.handle(make_drop(destination=f"ns-{i}/pod", policies=(f"ns-{i}/deny",)))
    assert sink.series == 11 + 1
    assert drops(registry, namespace="_other", pod="_other", direction="ingress", reason="policy-denied",
                 policy="_other", trap="_other") == 39


def test_deleting_a_pod_frees_series_budget(
        registry: CollectorRegistry, sink: MetricsSink, make_drop: MakeDrop, clock: FakeClock) -> None:
    """Once a deleted pod's series are gone, a new pod gets its own series again instead of _other."""
    for i in range(10):
        sink.handle(make_drop(destination=f"api/pod-{i}"))
    sink.pod_deleted("api", "pod-0")
    clock.now += 301
    sink.sweep()
    sink.handle(make_drop(destination="api/pod-new"))
    assert drops(registry, namespace="api", pod="pod-new", **DENY) == 1


def test_store_and_cache_values_are_read_at_scrape_time(registry: CollectorRegistry, make_drop: MakeDrop) -> None:
    """Size, evictions, cache hits and misses are whatever the objects hold when scraped."""
    sink = MetricsSink(registry)
    assert registry.get_sample_value("drop_explainer_store_signatures") is None
    cache = ExplanationCache()
    with DropStore(MEMORY, max_total=2) as store:
        sink.register_store(store)
        sink.register_explanation_cache(cache)
        assert registry.get_sample_value("drop_explainer_store_signatures") == 0
        for port in (1, 2, 3):
            store.record(make_drop(port=port))
        cache.hits, cache.misses = 7, 3
        assert registry.get_sample_value("drop_explainer_store_signatures") == 2
        assert registry.get_sample_value("drop_explainer_store_evictions_total") == 1
        assert registry.get_sample_value("drop_explainer_explanation_cache_hits_total") == 7
        assert registry.get_sample_value("drop_explainer_explanation_cache_misses_total") == 3


def test_self_metrics_record_what_the_daemon_reports(registry: CollectorRegistry, sink: MetricsSink) -> None:
    """Each method moves its own metric with its own labels."""
    sink.flow_received("hubble")
    sink.flow_received("hubble")
    sink.flow_malformed("calico", "no-destination")
    sink.source_reconnected("hubble")
    sink.source_connected("hubble", True)
    sink.source_connected("calico", False)
    sink.flow_lag("hubble", 1.5)
    sink.observe_explain(0.0003)
    sink.cluster_synced("pods", True)
    sink.queue_overflowed("hubble", 5)
    sink.sink_error("store")
    get = registry.get_sample_value
    assert get("drop_explainer_flows_received_total", {"source": "hubble"}) == 2
    assert get("drop_explainer_flows_malformed_total", {"source": "calico", "reason": "no-destination"}) == 1
    assert get("drop_explainer_source_reconnects_total", {"source": "hubble"}) == 1
    assert get("drop_explainer_source_connected", {"source": "hubble"}) == 1
    assert get("drop_explainer_source_connected", {"source": "calico"}) == 0
    assert get("drop_explainer_flow_lag_seconds", {"source": "hubble"}) == 1.5
    assert get("drop_explainer_explain_duration_seconds_bucket", {"le": "0.0005"}) == 1
    assert get("drop_explainer_explain_duration_seconds_bucket", {"le": "0.00025"}) == 0
    assert get("drop_explainer_cluster_synced", {"kind": "pods"}) == 1
    assert get("drop_explainer_queue_overflow_total", {"source": "hubble"}) == 5
    assert get("drop_explainer_sink_errors_total", {"sink": "store"}) == 1


def test_source_accounting_is_read_at_scrape_time_one_counter_each(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    """Lost events, resume duplicates, non-flow responses, clamps, truncations and TLS failures: each its own."""
    stats = resuming.StreamStats()
    sink.register_source("hubble", stats)
    get = registry.get_sample_value
    assert get("drop_explainer_source_tls_failures_total", {"source": "hubble"}) == 0
    stats.lost_events, stats.duplicates, stats.resumed = 7, 3, 2
    stats.clamped_times, stats.truncated, stats.tls_failures = 1, 4, 5
    stats.non_flow_by_kind.update({"node_status": 2, "lost_events": 1})
    source = {"source": "hubble"}
    assert get("drop_explainer_source_lost_events_total", source) == 7
    assert get("drop_explainer_resume_duplicates_total", source) == 3
    assert get("drop_explainer_source_resumes_total", source) == 2
    assert get("drop_explainer_flow_times_clamped_total", source) == 1
    assert get("drop_explainer_flows_truncated_total", source) == 4
    assert get("drop_explainer_source_tls_failures_total", source) == 5
    assert get("drop_explainer_non_flow_responses_total", {**source, "kind": "node_status"}) == 2
    assert get("drop_explainer_non_flow_responses_total", {**source, "kind": "lost_events"}) == 1


def test_admission_overflow_counts_every_new_signature_held_back(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    """Past the burst (no time passes on the frozen clock), each refused admission is one deferred signature."""
    admission = Admission(per_group_burst=2, per_group_rate=1.0, total_burst=100, total_rate=1.0, clock=lambda: 0.0)
    sink.register_admission(admission)
    results = [admission.admit(("default", "deathstar")) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert registry.get_sample_value("drop_explainer_new_signatures_deferred_total") == 3


def test_metrics_never_touch_the_global_registry(sink: MetricsSink, make_drop: MakeDrop) -> None:
    """Two daemons (or two tests) in one process do not share counters."""
    sink.handle(make_drop())
    assert REGISTRY.get_sample_value("drop_explainer_drops_total", {"namespace": "api", "pod": "pod-b", **DENY}) is None
