"""Repeated drops of one kind are explained once per cluster-state snapshot.

A blocked client retransmits its SYN and a broken probe fires every few
seconds: the same question arrives thousands of times. The key includes the
snapshot's generation, so any change of state (a new policy, a label) makes
every old answer unreachable and they age out of the LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Endpoint, Flow
from drop_explainer.policy.engine import Engine

Key = tuple[object, ...]
Annotate = Callable[[Flow, Explanation], Explanation]


def _end(e: Endpoint) -> tuple[str | None, ...]:
    if e.pod:
        return (e.namespace, e.pod)
    if e.pod_prefix:  # Calico's aggregate: no pod name and no address
        return (e.namespace, f"{e.pod_prefix}*")
    return (e.ip, str(e.kind))


def flow_key(flow: Flow) -> Key:
    """What makes two flows the same question: the ends, port, protocol, direction, kind of drop."""
    return (*_end(flow.source), *_end(flow.destination), flow.destination_port, flow.protocol, flow.direction,
            flow.verdict, flow.drop_kind, flow.drop_reason, flow.is_reply,
            tuple(sorted((h.kind, h.namespace or "", h.name, h.action) for h in flow.attribution)))


class ExplanationCache:
    """A bounded LRU of explanations, keyed by (state generation, flow key)."""

    def __init__(self, size: int = 4096, *, blast_radius: bool = True) -> None:
        self.size = size
        self.blast_radius = blast_radius
        """False in the daemon: the radius is completed off the flow path."""
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Key, Explanation] = OrderedDict()

    def explain(self, engine: Engine, flow: Flow, annotate: Annotate | None = None) -> Explanation:
        """The cached answer, or a new one (passed through ``annotate`` once, when first made)."""
        key = (engine.state.generation, *flow_key(flow))
        found = self._items.get(key)
        if found is not None:
            self.hits += 1
            self._items.move_to_end(key)
            # The explanation of the first flow of its kind: a repeat asks the same question,
            # and copying it per flow cost more than the rest of a repeat's way through.
            return found
        self.misses += 1
        expl = explain_flow(engine, flow, blast_radius=self.blast_radius)
        if annotate is not None:
            expl = annotate(flow, expl)
        self._items[key] = expl
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return expl

    def __len__(self) -> int:
        return len(self._items)
