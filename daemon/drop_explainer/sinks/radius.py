"""Completes new drops' explanations with their fix's blast radius, off the flow path.

Counting what a fix would newly allow costs ~1 ms for a precise rule and up
to hundreds of milliseconds for a broad one; inline it would cap new drop
signatures at a few hundred a second and pause the API. So the daemon
records a new drop with its fix already checked, and this sink computes the
radius in a worker thread, against the snapshot the drop was explained on,
then updates the stored explanation. The queue is bounded: under a storm of
new signatures the oldest wait is dropped and counted (its explanation keeps
a checked fix, only without the radius).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

from drop_explainer.explain.explaining import complete
from drop_explainer.explain.model import Explanation
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks.base import ExplainedDrop

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RadiusStats:
    completed: int = 0
    overflow: int = 0
    gone: int = 0
    """Signatures evicted from the store before their radius was ready."""


class RadiusSink:
    def __init__(self, engine: Callable[[], Engine], update: Callable[[str, Explanation], bool],
                 *, queue_size: int = 1000) -> None:
        self._engine = engine
        self._update = update
        self._queue: collections.deque[tuple[str, Engine, Explanation]] = collections.deque(maxlen=queue_size)
        self._wake = asyncio.Event()
        self.stats = RadiusStats()

    def handle(self, drop: ExplainedDrop) -> None:
        expl = drop.explanation
        if not drop.new or not any(f.verified and f.blast_radius is None for f in expl.fixes):
            return
        if len(self._queue) == self._queue.maxlen:
            self.stats.overflow += 1
        self._queue.append((drop.signature.id, self._engine(), expl))
        self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            sid, engine, expl = self._queue.popleft()
            # A thread keeps the event loop answering while a broad fix is counted; the
            # snapshot is immutable and the engine's index only ever gains equal entries.
            done = await asyncio.to_thread(complete, engine, expl)
            if self._update(sid, done):
                self.stats.completed += 1
            else:
                self.stats.gone += 1
