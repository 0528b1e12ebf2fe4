"""The bounded queue between a source's network reader and the pipeline.

The reader must never wait for the consumer (a stalled gRPC stream makes the
server drop our subscription), so when the queue is full the oldest flow is
dropped and counted, never silently.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from drop_explainer.flows import model


class OverflowCounter(Protocol):
    overflow: int


class FlowQueue:
    """A bounded FIFO that never blocks the producer: when full, the oldest flow goes (and is counted)."""

    def __init__(self, maxsize: int, stats: OverflowCounter) -> None:
        # A full deque with maxlen drops from the left as we append: drop-oldest for free.
        self.items: deque[model.Flow] = deque(maxlen=maxsize)
        self._maxsize = maxsize
        self._stats = stats
        self._waiter: asyncio.Future[None] | None = None
        self.closed_by: BaseException | None = None
        self.finished = False

    def put(self, flow: model.Flow) -> None:
        if len(self.items) == self._maxsize:
            self._stats.overflow += 1
        self.items.append(flow)
        self._wake()

    def put_many(self, flows: list[model.Flow]) -> None:
        excess = len(self.items) + len(flows) - self._maxsize
        if excess > 0:
            self._stats.overflow += min(excess, len(flows))
        self.items.extend(flows)
        self._wake()

    def finish(self, exc: BaseException | None = None) -> None:
        """The producer ended (with ``exc`` if it failed); the consumer drains, then stops."""
        self.finished, self.closed_by = True, exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Return when a flow is queued or the producer finished."""
        if self.items or self.finished:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
