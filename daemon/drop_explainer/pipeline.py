"""The middle of the daemon: one flow in, an explained drop out to every sink.

Synchronous on purpose: explaining is CPU work over an immutable snapshot,
and sinks only enqueue. The async edges (sources, API, watches) live in
app.py; this module is the part the throughput benchmark measures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.cache import Annotate, ExplanationCache
from drop_explainer.explain.explaining import UnexplainableFlow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Flow, Verdict
from drop_explainer.policy.engine import Engine
from drop_explainer.policy.profiles import Profile
from drop_explainer.sinks.base import DropSignature, ExplainedDrop, Sink, signature_of

log = logging.getLogger(__name__)
EXPLAINED = (Verdict.DROPPED, Verdict.AUDIT)


class StateSource(Protocol):
    """Whatever holds the current cluster snapshot: a file, or the live watch cache."""

    def snapshot(self) -> ClusterState: ...


class NewDropRecorder(Protocol):
    """The drop store, as the pipeline sees it: it decides what is new."""

    def record(self, drop: ExplainedDrop) -> bool: ...

    def knows(self, sid: str) -> bool: ...


class _Bucket:
    """A token bucket: ``burst`` at once, then ``rate`` per second."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens, self.stamp = burst, now

    def take(self, *, burst: float, rate: float, now: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Admission:
    """Admits new drop signatures to the store at a bounded rate per affected workload and in total.

    A flood of distinct drops (an attacker scanning ports, a broken
    deployment) would otherwise cost a store write each and, past the
    store's cap, evict the forensic record of everyone else. Over the rate,
    a new signature is not stored: its drops still reach every other sink
    (metrics count them), and it is counted in ``deferred`` and, per
    affected workload, in ``deferred_by_group`` (the "N more new signatures"
    an operator reads in the log line ``new_signatures_deferred``).
    """

    def __init__(self, *, per_group_burst: float = 50, per_group_rate: float = 1.0, total_burst: float = 500,
                 total_rate: float = 20.0, max_groups: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_group_burst, self.per_group_rate = per_group_burst, per_group_rate
        self.total_burst, self.total_rate = total_burst, total_rate
        self.max_groups = max_groups
        self._clock = clock
        self._total = _Bucket(total_burst, clock())
        self._groups: dict[object, _Bucket] = {}
        self.deferred = 0
        self.deferred_by_group: dict[object, int] = {}
        self._last_report = clock()

    def admit(self, group: object) -> bool:
        now = self._clock()
        bucket = self._groups.get(group)
        if bucket is None:
            if len(self._groups) >= self.max_groups:
                self._groups.clear()  # forgetting a bucket only refills it: bounded memory wins
            bucket = self._groups[group] = _Bucket(self.per_group_burst, now)
        ok = bucket.take(burst=self.per_group_burst, rate=self.per_group_rate, now=now) and \
            self._total.take(burst=self.total_burst, rate=self.total_rate, now=now)
        if not ok:
            self.deferred += 1
            if group in self.deferred_by_group or len(self.deferred_by_group) < self.max_groups:
                self.deferred_by_group[group] = self.deferred_by_group.get(group, 0) + 1
            self._report(now)
        return ok

    def _report(self, now: float) -> None:
        if now - self._last_report < 10.0:
            return
        self._last_report = now
        top = sorted(self.deferred_by_group.items(), key=lambda kv: -kv[1])[:5]
        log.warning("new_signatures_deferred", extra={
            "deferred": self.deferred, "top": [f"{'/'.join(map(str, g)) if isinstance(g, tuple) else g}: "
                                               f"{n} more new signatures" for g, n in top]})


def _log_new(drop: ExplainedDrop) -> None:
    """One line per new signature in the daemon's own log, for `kubectl logs` and log pipelines."""
    sig = drop.signature
    log.info("new_signature", extra={
        "id": sig.id, "workload": sig.affected_workload, "source": sig.source_workload,
        "destination": sig.destination, "port": sig.port, "protocol": sig.protocol, "direction": sig.direction,
        "policy": list(sig.policies), "trap": list(sig.traps), "pod": sig.affected,
        "headline": drop.explanation.headline})


class StaticState:
    """A snapshot that never changes: a saved state, the demo, offline forensics."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def snapshot(self) -> ClusterState:
        return self._state


class Pipeline:
    def __init__(
        self,
        state: StateSource,
        *,
        store: NewDropRecorder | None = None,
        sinks: Sequence[tuple[str, Sink]] = (),
        cache: ExplanationCache | None = None,
        annotate: Annotate | None = None,
        observe_latency: Callable[[float], None] | None = None,
        on_sink_error: Callable[[str], None] | None = None,
        admission: Admission | None = None,
        profile: Callable[[ClusterState], Profile] | None = None,
    ) -> None:
        self.state = state
        self.profile = profile
        """Which CNI profile judges a snapshot (--cni, else detected, else the source's); None: the engine's own."""
        self.store = store
        self.sinks = list(sinks)
        # `or` would replace an empty cache (it has __len__) with a new one the metrics never see.
        self.cache = cache if cache is not None else ExplanationCache()
        self.annotate = annotate
        self._observe = observe_latency
        self._on_sink_error = on_sink_error
        self.admission = admission
        self.failed: dict[str, int] = {}
        """Flows that raised while being explained, by exception type (counted, logged, skipped)."""
        self._engine: Engine | None = None
        self._signatures: dict[int, tuple[Explanation, DropSignature]] = {}
        self.unexplainable = 0
        self.processed = 0

    def engine(self) -> Engine:
        """The engine of the newest snapshot; its index is reused until the state changes."""
        snap = self.state.snapshot()
        if self._engine is None or self._engine.state is not snap:
            self._engine = Engine(snap, self.profile(snap) if self.profile is not None else None)
        return self._engine

    def process(self, flow: Flow) -> ExplainedDrop | None:
        """Explain a dropped (or audit) flow and hand it to every sink; others are ignored."""
        if flow.verdict not in EXPLAINED:
            return None
        engine = self.engine()
        misses = self.cache.misses
        started = time.perf_counter()
        try:
            expl = self.cache.explain(engine, flow, self.annotate)
        except UnexplainableFlow as exc:
            self.unexplainable += 1
            log.debug("flow_unexplainable", extra={"reason": str(exc)})
            return None
        except Exception as exc:
            # No single flow may end the daemon: count it by kind, keep the trace at debug, go on.
            kind = type(exc).__name__
            self.failed[kind] = self.failed.get(kind, 0) + 1
            log.debug("flow_failed", exc_info=True, extra={"error": kind})
            return None
        if self._observe is not None and self.cache.misses != misses:
            # Only fresh explanations: a cache hit costs microseconds and would bury them.
            self._observe(time.perf_counter() - started)
        drop = ExplainedDrop(flow, expl, self._signature(flow, expl, engine))
        if self.store is not None and self._admitted(drop):
            new = self._record(drop)
            if new:
                drop = replace(drop, new=True)
                _log_new(drop)
        for name, sink in self.sinks:
            try:
                sink.handle(drop)
            except Exception:
                # One broken sink must not starve the others or stop the stream.
                log.exception("sink_failed", extra={"sink": name})
                if self._on_sink_error is not None:
                    self._on_sink_error(name)
        self.processed += 1
        return drop

    def _signature(self, flow: Flow, expl: Explanation, engine: Engine) -> DropSignature:
        """Repeats share their (cached) explanation object, and so their signature.

        The memo holds the explanation itself, so its id cannot be reused while the entry lives.
        """
        hit = self._signatures.get(id(expl))
        if hit is not None and hit[0] is expl:
            return hit[1]
        sig = signature_of(flow, expl, engine.state)
        if len(self._signatures) >= self.cache.size:
            self._signatures.clear()
        self._signatures[id(expl)] = (expl, sig)
        return sig

    def _admitted(self, drop: ExplainedDrop) -> bool:
        """Known signatures always; new ones within the admission rate of their affected workload."""
        if self.admission is None:
            return True
        assert self.store is not None
        # By workload: a flood spread over a Deployment's replicas is one flood (an address for a non-pod end).
        return self.store.knows(drop.signature.id) or self.admission.admit(drop.signature.affected_workload)

    def _record(self, drop: ExplainedDrop) -> bool:
        assert self.store is not None
        try:
            return self.store.record(drop)
        except Exception:
            log.exception("sink_failed", extra={"sink": "store"})
            if self._on_sink_error is not None:
                self._on_sink_error("store")
            return False
