"""The export sink: explained drops as records, to OTLP and/or a JSON lines file.

``handle()`` is on the flow path and stays cheap: for a repeated drop it
adds to its signature's count and returns; only a new signature builds a
record (once) and offers it to each destination's byte-bounded queue
(channel.py), which never waits. Count updates are made by the sink's own
task every ``update_interval_s``, one record per signature whose count grew,
a ``sample`` fraction of them (deterministic, per signature: a skipped
update's packets are carried into the next one's ``count.delta``, so sums
stay right). Everything slow happens in ``run()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drop_explainer.cluster.state import ClusterState
from drop_explainer.export.channel import Channel
from drop_explainer.export.record import Record, Value, new_record, update_record
from drop_explainer.sinks.base import ExplainedDrop

DRAIN_AT_EXIT_S = 5.0


@dataclass(frozen=True, slots=True)
class ExportPolicy:
    new: bool = True
    """One record per new signature."""
    updates: bool = True
    """Periodic count updates of the signatures that saw drops since their last record."""
    update_interval_s: float = 60.0
    sample: float = 1.0
    """Fraction of count updates exported (0..1)."""
    max_signatures: int = 20_000
    """Signatures whose counts are kept for updates; beyond, a signature is not updated (counted)."""
    forget_after_ticks: int = 60
    """A signature silent for this many update intervals is forgotten (its next drop starts it again)."""
    resource: Mapping[str, Value] = field(default_factory=dict)


@dataclass(slots=True)
class _Tracked:
    base: Record
    total: int
    pending: int = 0
    credit: float = 0.0
    idle: int = 0


@dataclass(slots=True)
class SinkStats:
    new: int = 0
    updates: int = 0
    untracked: int = 0
    """Drops of a signature not counted for updates: the signature table was full."""
    sampled_out: int = 0


class ExportSink:
    def __init__(self, channels: Sequence[Channel], policy: ExportPolicy,
                 state: Callable[[], ClusterState] | None = None) -> None:
        self.channels = list(channels)
        self.policy = policy
        self.stats = SinkStats()
        self._state = state
        self._tracked: dict[str, _Tracked] = {}

    def handle(self, drop: ExplainedDrop) -> None:
        tracked = self._tracked.get(drop.signature.id)
        if tracked is not None:  # a repeat, the common case: two additions
            packets = drop.flow.packets
            tracked.pending += packets
            tracked.total += packets
            return
        if not (drop.new and self.policy.new) and not self.policy.updates:
            return
        self._first_sight(drop)

    def _first_sight(self, drop: ExplainedDrop) -> None:
        packets = drop.flow.packets  # distinct packets (a double report counts 0), as the store counts them
        record = new_record(drop, self._state() if self._state is not None else None, packets)
        if drop.new and self.policy.new:
            self.stats.new += 1
            self._offer(record)
            pending = 0
        else:
            pending = packets  # known before (another run): its drops here go out as updates
        if self.policy.updates:
            if len(self._tracked) >= self.policy.max_signatures:
                self.stats.untracked += 1
                return
            self._tracked[drop.signature.id] = _Tracked(record, packets, pending)

    def _offer(self, record: Record) -> None:
        for channel in self.channels:
            channel.offer(record)

    def emit_updates(self, now_ns: int | None = None) -> int:
        """One update record per signature with drops since its last record (sampled); returns how many."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        made = 0
        silent = []
        for sig_id, tracked in self._tracked.items():
            if not tracked.pending:
                tracked.idle += 1
                if tracked.idle >= self.policy.forget_after_ticks:
                    silent.append(sig_id)
                continue
            tracked.idle = 0
            tracked.credit += self.policy.sample
            if tracked.credit < 1.0:
                self.stats.sampled_out += 1
                continue
            tracked.credit -= 1.0
            self._offer(update_record(tracked.base, now_ns, tracked.total, tracked.pending))
            tracked.pending = 0
            made += 1
        for sig_id in silent:
            del self._tracked[sig_id]
        self.stats.updates += made
        return made

    async def _updates_forever(self) -> None:
        while True:
            await asyncio.sleep(self.policy.update_interval_s)
            self.emit_updates()

    async def run(self) -> None:
        """The channels' senders and the update ticker; on cancel, a bounded last send, then close."""
        try:
            async with asyncio.TaskGroup() as tg:
                for channel in self.channels:
                    tg.create_task(channel.run(), name=f"export-{channel.name}")
                if self.policy.updates:
                    tg.create_task(self._updates_forever(), name="export-updates")
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._close())

    async def _close(self) -> None:
        for channel in self.channels:
            await channel.drain(DRAIN_AT_EXIT_S)
            await channel.exporter.close()

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(_ExportCollector(self))


class _ExportCollector(Collector):
    def __init__(self, sink: ExportSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily("drop_explainer_export_records",
                                      "Export records by destination and outcome (sent, overflow: refused by the "
                                      "full queue, rejected: refused by the destination).",
                                      labels=["exporter", "outcome"])
        retries = CounterMetricFamily("drop_explainer_export_retries", "Batches sent again after a retryable "
                                      "failure.", labels=["exporter"])
        queued = GaugeMetricFamily("drop_explainer_export_queue_bytes", "Bytes of records waiting to be sent.",
                                   labels=["exporter"])
        for ch in self.sink.channels:
            for outcome, value in (("sent", ch.stats.sent), ("overflow", ch.stats.overflow),
                                   ("rejected", ch.stats.rejected)):
                records.add_metric([ch.name, outcome], value)
            retries.add_metric([ch.name], ch.stats.retries)
            queued.add_metric([ch.name], ch.stats.queued_bytes)
        made = CounterMetricFamily("drop_explainer_export_made", "Records made, by kind (new signature, update).",
                                   labels=["kind"])
        made.add_metric(["new"], self.sink.stats.new)
        made.add_metric(["update"], self.sink.stats.updates)
        untracked = CounterMetricFamily("drop_explainer_export_untracked_signatures",
                                        "Signatures not counted for updates: the signature table was full.")
        untracked.add_metric([], self.sink.stats.untracked)
        yield from (records, retries, queued, made, untracked)
