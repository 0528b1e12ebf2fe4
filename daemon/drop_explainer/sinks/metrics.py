"""Prometheus metrics of drops and of the daemon itself, on an injected registry.

Dashboards and alerts read drops from here, so the labels say who was hit and
by what: namespace and pod of the affected pod (the destination for ingress,
the source for egress; namespace="" and pod=<kind> such as "world" for an
end that is not a pod), direction, reason (policy-denied, policy-deny,
other), the first deciding policy ("namespace/name") and the first trap id.
``drop_explainer_new_drop_signatures_total`` is what Alertmanager pages on.

Label cardinality, because pod is a label:

- drops_total / drop_connections_total share one label set per series. At
  most ``max_series`` sets are created freely; beyond it a new set gets
  pod="_other" (each folded drop counted in
  ``drop_explainer_series_folded_total``), and beyond ``max_series`` plus
  10 % headroom namespace, pod, policy and trap all become "_other". Hard
  bound: 1.1 x max_series + 8 (directions x reasons) series per metric.
- Series of a deleted pod are removed ``deleted_pod_grace_seconds`` after
  ``pod_deleted()`` (a last scrape sees the final value), freeing the budget.
  A pod recreated under the same name (StatefulSet) restarts from zero,
  which rate() reads as a counter reset.
- new_drop_signatures_total drops the reason label and adds workload (the
  Deployment, StatefulSet... the signature is keyed by, cluster/workloads.py),
  next to the pod it was first seen on. A signature is counted once per
  workload, not per pod, so it never has more series than drops_total and a
  rollout adds none.
- Self metrics: source (hubble, calico, file), malformed reason (a closed
  set chosen by the normalisers), kind (the watched kinds), sink (a handful).

The registry is always passed in (never the global one), so tests and two
daemons in one process do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol, TypeAlias

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drop_explainer.cluster.unevaluated import NotEvaluated
from drop_explainer.flows.model import Endpoint
from drop_explainer.sinks.base import ExplainedDrop

Clock: TypeAlias = Callable[[], float]
DropLabels: TypeAlias = tuple[str, str, str, str, str, str]
"""namespace, pod, direction, reason, policy, trap."""
PodKey: TypeAlias = tuple[str, str]

OTHER: Final = "_other"
DROP_LABELS: Final = ("namespace", "pod", "direction", "reason", "policy", "trap")
NEW_LABELS: Final = ("namespace", "workload", "pod", "direction", "policy", "trap")
"""workload is what a signature is keyed by; pod is the pod it was first seen on (where its Event is)."""
EXPLAIN_BUCKETS: Final = (50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
                          250e-3, 500e-3, 1.0)
"""50 µs (a cache hit) to 1 s (a blast radius over a large cluster)."""


class StoreStats(Protocol):
    """What the metrics read from the drop store at scrape time."""

    evictions: int
    write_failures: int
    failing: bool

    def size(self) -> int: ...


class SourceAccounting(Protocol):
    """What the metrics read from a source's counters at scrape time (sources.resuming.StreamStats)."""

    lost_events: int
    duplicates: int
    resumed: int
    clamped_times: int
    truncated: int
    tls_failures: int
    non_flow_by_kind: dict[str, int]


class AdmissionStats(Protocol):
    """What the metrics read from the pipeline's admission of new signatures."""

    deferred: int


class CacheStats(Protocol):
    """What the metrics read from the explanation cache at scrape time."""

    hits: int
    misses: int


class MetricsSink:
    """A Sink counting drops per affected pod, plus the daemon's own counters the other parts call."""

    def __init__(self, registry: CollectorRegistry, *, max_series: int = 10_000,
                 deleted_pod_grace_seconds: float = 300, clock: Clock = time.monotonic) -> None:
        self.max_series = max_series
        self.grace = deleted_pod_grace_seconds
        self._hard_limit = max_series + max_series // 10
        self._clock = clock
        self._series: dict[DropLabels, tuple[Counter, Counter]] = {}
        self._series_of_pod: dict[PodKey, set[DropLabels]] = {}
        self._new_of_pod: dict[PodKey, set[tuple[str, ...]]] = {}
        # One grace for all, so insertion order is deadline order and the check on handle() is O(1).
        self._deadlines: dict[PodKey, float] = {}
        self._received_of: dict[str, Counter] = {}

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: Iterable[str]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self._drops = counter("drop_explainer_drops", "Dropped flow records explained, per affected pod.",
                              DROP_LABELS)
        self._connections = counter(
            "drop_explainer_drop_connections",
            "Connection attempts in dropped flows (aggregated and retransmitted records count once each).",
            DROP_LABELS)
        self._new_signatures = counter(
            "drop_explainer_new_drop_signatures",
            "Drop signatures seen for the first time ever (the drop store remembers across restarts).", NEW_LABELS)
        self._folded = counter("drop_explainer_series_folded",
                               "Drops counted under pod=\"_other\" because max_series label sets exist.")
        self._received = counter("drop_explainer_flows_received", "Flow records received from a source.",
                                 ["source"])
        self._malformed = counter("drop_explainer_flows_malformed",
                                  "Records a source sent that could not be made into a Flow.", ["source", "reason"])
        self._reconnects = counter("drop_explainer_source_reconnects",
                                   "Times a source reconnected after its stream failed.", ["source"])
        self._overflow = counter("drop_explainer_queue_overflow",
                                 "Flows discarded because a source's queue was full (oldest first).", ["source"])
        self._sink_errors = counter("drop_explainer_sink_errors", "Exceptions raised by a sink's handle().",
                                    ["sink"])
        self._connected = gauge("drop_explainer_source_connected", "1 while the source's stream is open.",
                                ["source"])
        self._lag = gauge("drop_explainer_flow_lag_seconds",
                          "Wall clock minus the time of the last flow received from the source.", ["source"])
        self._synced = gauge("drop_explainer_cluster_synced",
                             "1 once the first list of this kind is loaded; nothing is explained before.",
                             ["kind"])
        self._explain = Histogram("drop_explainer_explain_duration_seconds", "Time to explain one flow.",
                                  buckets=EXPLAIN_BUCKETS, registry=registry)
        self._scraped = _ScrapeCollector()
        registry.register(self._scraped)

    # --- drops -----------------------------------------------------------------

    def handle(self, drop: ExplainedDrop) -> None:
        """Count one explained drop, its connections, and a new signature."""
        if self._deadlines:
            self._remove_due(self._clock())
        sig, flow = drop.signature, drop.flow
        ns, pod = affected_pod_labels(flow.source if sig.direction == "egress" else flow.destination)
        labels = (ns, pod, sig.direction, str(flow.drop_kind), sig.policies[0] if sig.policies else "",
                  sig.traps[0] if sig.traps else "")
        children = self._series.get(labels)
        if children is None:
            labels, children = self._add_series(labels)
        children[0].inc()
        children[1].inc(flow.connections)
        if drop.new:
            workload = labels[1] if labels[0] in ("", OTHER) else (sig.affected_workload.partition("/")[2] or labels[1])
            new_labels = (labels[0], workload, *labels[1:3], *labels[4:])
            self._new_signatures.labels(*new_labels).inc()
            self._new_of_pod.setdefault((labels[0], labels[1]), set()).add(new_labels)

    def pod_deleted(self, namespace: str, pod: str) -> None:
        """Forget the pod's series after the grace period (the first call for a pod sets the deadline)."""
        self._deadlines.setdefault((namespace, pod), self._clock() + self.grace)

    def sweep(self) -> int:
        """Remove the series of pods whose grace has passed; returns how many pods. Call it periodically."""
        return self._remove_due(self._clock())

    @property
    def series(self) -> int:
        """Label sets of drops_total in use."""
        return len(self._series)

    def _add_series(self, labels: DropLabels) -> tuple[DropLabels, tuple[Counter, Counter]]:
        if len(self._series) >= self.max_series:
            self._folded.inc()
            ns, _, direction, reason, policy, trap = labels
            labels = (ns, OTHER, direction, reason, policy, trap)
            if labels not in self._series and len(self._series) >= self._hard_limit:
                labels = (OTHER, OTHER, direction, reason, OTHER, OTHER)
            found = self._series.get(labels)
            if found is not None:
                return labels, found
        children = (self._drops.labels(*labels), self._connections.labels(*labels))
        self._series[labels] = children
        self._series_of_pod.setdefault((labels[0], labels[1]), set()).add(labels)
        return labels, children

    def _remove_due(self, now: float) -> int:
        removed = 0
        while self._deadlines:
            key = next(iter(self._deadlines))
            if self._deadlines[key] > now:
                break
            del self._deadlines[key]
            for labels in self._series_of_pod.pop(key, ()):
                del self._series[labels]
                self._drops.remove(*labels)
                self._connections.remove(*labels)
            for new_labels in self._new_of_pod.pop(key, ()):
                self._new_signatures.remove(*new_labels)
            removed += 1
        return removed

    # --- the daemon's own metrics --------------------------------------------

    def flow_received(self, source: str) -> None:
        child = self._received_of.get(source)
        if child is None:  # a child per source is cached: this runs for every flow
            child = self._received_of[source] = self._received.labels(source)
        child.inc()

    def flow_malformed(self, source: str, reason: str) -> None:
        self._malformed.labels(source, reason).inc()

    def source_reconnected(self, source: str) -> None:
        self._reconnects.labels(source).inc()

    def source_connected(self, source: str, connected: bool) -> None:
        self._connected.labels(source).set(1 if connected else 0)

    def flow_lag(self, source: str, seconds: float) -> None:
        self._lag.labels(source).set(seconds)

    def observe_explain(self, seconds: float) -> None:
        self._explain.observe(seconds)

    def cluster_synced(self, kind: str, synced: bool) -> None:
        self._synced.labels(kind).set(1 if synced else 0)

    def queue_overflowed(self, source: str, count: int = 1) -> None:
        self._overflow.labels(source).inc(count)

    def sink_error(self, sink: str) -> None:
        self._sink_errors.labels(sink).inc()

    def register_store(self, store: StoreStats) -> None:
        """Report the store's size and evictions, read at each scrape."""
        self._scraped.store = store

    def register_explanation_cache(self, cache: CacheStats) -> None:
        """Report the explanation cache's hits and misses, read at each scrape."""
        self._scraped.cache = cache

    def register_source(self, source: str, stats: SourceAccounting) -> None:
        """Report a source's lost events, resume duplicates, non-flow responses, clamps and truncations."""
        self._scraped.sources[source] = stats

    def register_admission(self, admission: AdmissionStats) -> None:
        """Report the new signatures held back by the admission limits."""
        self._scraped.admission = admission

    def register_not_evaluated(self, objects: Callable[[], Sequence[NotEvaluated]]) -> None:
        """Report the policy objects of kinds not evaluated in the current state (read at each scrape)."""
        self._scraped.not_evaluated = objects


def affected_pod_labels(ep: Endpoint) -> PodKey:
    """namespace and pod labels of an endpoint: ("", kind) when it is not a pod."""
    if ep.namespace and ep.pod:
        return ep.namespace, ep.pod
    if ep.namespace and ep.pod_prefix:  # a Calico aggregate stands for several pods
        return ep.namespace, f"{ep.pod_prefix}*"
    return "", str(ep.kind)


class _ScrapeCollector(Collector):
    """Values owned by other objects, read when Prometheus scrapes rather than copied on every change."""

    def __init__(self) -> None:
        self.store: StoreStats | None = None
        self.cache: CacheStats | None = None
        self.sources: dict[str, SourceAccounting] = {}
        self.admission: AdmissionStats | None = None
        self.not_evaluated: Callable[[], Sequence[NotEvaluated]] | None = None

    def describe(self) -> Iterable[Metric]:
        return [*self._families(None, None), *_source_families({}), *_admission_families(None),
                *_not_evaluated_families(None)]

    def collect(self) -> Iterable[Metric]:
        return [*self._families(self.store, self.cache), *_source_families(self.sources),
                *_admission_families(self.admission), *_not_evaluated_families(self.not_evaluated)]

    @staticmethod
    def _families(store: StoreStats | None, cache: CacheStats | None) -> Iterator[Metric]:
        size = GaugeMetricFamily("drop_explainer_store_signatures", "Drop signatures in the drop store.")
        evictions = CounterMetricFamily("drop_explainer_store_evictions",
                                        "Signatures evicted from the drop store to stay within its limits.")
        hits = CounterMetricFamily("drop_explainer_explanation_cache_hits",
                                   "Flows answered from the explanation cache.")
        misses = CounterMetricFamily("drop_explainer_explanation_cache_misses",
                                     "Flows explained afresh (a new question or a new cluster state).")
        write_failures = CounterMetricFamily("drop_explainer_store_write_failures",
                                             "Drop store commits that failed and were rolled back (retried).")
        failing = GaugeMetricFamily("drop_explainer_store_failing", "1 while the last drop store commit failed.")
        if store is not None:
            size.add_metric([], store.size())
            evictions.add_metric([], store.evictions)
            write_failures.add_metric([], store.write_failures)
            failing.add_metric([], 1 if store.failing else 0)
        if cache is not None:
            hits.add_metric([], cache.hits)
            misses.add_metric([], cache.misses)
        yield from (size, evictions, write_failures, failing, hits, misses)


_SOURCE_COUNTERS: Final = (
    ("lost_events", "drop_explainer_source_lost_events",
     "Events the flow server reported lost on its side (Hubble lost_events, summed)."),
    ("duplicates", "drop_explainer_resume_duplicates", "Flows a resume replayed, recognised and dropped."),
    ("resumed", "drop_explainer_source_resumes", "Stream calls that resumed from a since time."),
    ("clamped_times", "drop_explainer_flow_times_clamped",
     "Flows stamped too far ahead of the local clock, set to now."),
    ("truncated", "drop_explainer_flows_truncated", "Flows whose strings, labels or lists were cut to the caps."),
    ("tls_failures", "drop_explainer_source_tls_failures",
     "Stream calls that failed in TLS set-up (wrong CA or server name, a client certificate missing or refused)."),
)


def _source_families(sources: dict[str, SourceAccounting]) -> Iterator[Metric]:
    for attr, name, doc in _SOURCE_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["source"])
        for source, stats in sources.items():
            family.add_metric([source], getattr(stats, attr))
        yield family
    non_flow = CounterMetricFamily("drop_explainer_non_flow_responses",
                                   "Valid responses that carry no flow (node_status, lost_events), skipped.",
                                   labels=["source", "kind"])
    for source, stats in sources.items():
        for kind, count in sorted(stats.non_flow_by_kind.items()):
            non_flow.add_metric([source, kind], count)
    yield non_flow


def _admission_families(admission: AdmissionStats | None) -> Iterator[Metric]:
    deferred = CounterMetricFamily(
        "drop_explainer_new_signatures_deferred",
        "New drop signatures over the admission rate (per workload or in total), counted as \"N more\" instead.")
    if admission is not None:
        deferred.add_metric([], admission.deferred)
    yield deferred


def _not_evaluated_families(objects: Callable[[], Sequence[NotEvaluated]] | None) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "drop_explainer_policies_not_evaluated",
        "Policy objects of kinds the engine does not evaluate (CiliumNetworkPolicy, Calico, AdminNetworkPolicy, "
        "Antrea-native), by API group and kind; answers on the pods they select are marked incomplete.",
        labels=["group", "kind"])
    if objects is not None:
        by_kind: dict[tuple[str, str], int] = {}
        for entry in objects():
            by_kind[(entry.group, entry.kind)] = by_kind.get((entry.group, entry.kind), 0) + 1
        for (group, kind), count in sorted(by_kind.items()):
            family.add_metric([group, kind], count)
    yield family
