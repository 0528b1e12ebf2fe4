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
from drop_explainer.sinks.base import DropSignature, ExplainedDrop, Sink, signature_of

log = logging.getLogger(__name__)
EXPLAINED = (Verdict.DROPPED, Verdict.AUDIT)


class StateSource(Protocol):
    """Whatever holds the current cluster snapshot: a file, or the live watch cache."""

    def snapshot(self) -> ClusterState: ...


class NewDropRecorder(Protocol):
    """The drop store, as the pipeline sees it: it decides what is new."""

    def record(self, drop: ExplainedDrop) -> bool: ...


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
    ) -> None:
        self.state = state
        self.store = store
        self.sinks = list(sinks)
        # `or` would replace an empty cache (it has __len__) with a new one the metrics never see.
        self.cache = cache if cache is not None else ExplanationCache()
        self.annotate = annotate
        self._observe = observe_latency
        self._on_sink_error = on_sink_error
        self._engine: Engine | None = None
        self._signatures: dict[int, tuple[Explanation, DropSignature]] = {}
        self.unexplainable = 0
        self.processed = 0

    def engine(self) -> Engine:
        """The engine of the newest snapshot; its index is reused until the state changes."""
        snap = self.state.snapshot()
        if self._engine is None or self._engine.state is not snap:
            self._engine = Engine(snap)
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
        if self._observe is not None and self.cache.misses != misses:
            # Only fresh explanations: a cache hit costs microseconds and would bury them.
            self._observe(time.perf_counter() - started)
        drop = ExplainedDrop(flow, expl, self._signature(flow, expl, engine))
        if self.store is not None:
            new = self._record(drop)
            if new:
                drop = replace(drop, new=True)
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

    def _record(self, drop: ExplainedDrop) -> bool:
        assert self.store is not None
        try:
            return self.store.record(drop)
        except Exception:
            log.exception("sink_failed", extra={"sink": "store"})
            if self._on_sink_error is not None:
                self._on_sink_error("store")
            return False
