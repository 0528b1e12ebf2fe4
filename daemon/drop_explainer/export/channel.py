"""One destination's queue and sender: bounded in bytes, batched, retried with backoff.

A record stays at the head of the queue until its destination took it, so a
Collector that restarts (or is unreachable for a while) loses nothing that
fitted in the bound: the batch is resent once it is back. What does not fit
is refused at once and counted (``overflow``); ``offer`` never waits, so the
flow path is never held up by a slow destination.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from drop_explainer.export.record import Record

log = logging.getLogger(__name__)


class RetryableError(Exception):
    """The destination may take the batch later (unreachable, overloaded, restarting)."""


class PermanentError(Exception):
    """The destination refused the batch for good (bad request, auth): retrying would not help."""


class Exporter(Protocol):
    name: str

    async def send(self, batch: Sequence[Record]) -> int:
        """Deliver the batch and say how many of its records the destination refused (partial success);
        or raise RetryableError (nothing taken, send again) / PermanentError (nothing taken, never will be)."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    max_queue_bytes: int = 16 * 1024 * 1024
    max_batch_records: int = 512
    max_batch_bytes: int = 1024 * 1024
    linger_s: float = 1.0
    """How long a part-filled batch waits for company before it is sent."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(slots=True)
class ChannelStats:
    sent: int = 0
    overflow: int = 0
    """Records refused because the queue was full (bytes): the bound at work."""
    rejected: int = 0
    """Records the destination refused for good."""
    retries: int = 0
    queued_bytes: int = 0
    queued: int = 0


class Channel:
    """Queues records for one exporter and sends them from its own task (``run``)."""

    def __init__(self, exporter: Exporter, settings: ChannelSettings) -> None:
        self.exporter = exporter
        self.settings = settings
        self.stats = ChannelStats()
        self._queue: deque[Record] = deque()
        self._ready = asyncio.Event()

    @property
    def name(self) -> str:
        return self.exporter.name

    def offer(self, record: Record) -> bool:
        """Queue a record if it fits in the bound; never blocks."""
        if self.stats.queued_bytes + record.size > self.settings.max_queue_bytes:
            self.stats.overflow += 1
            return False
        self._queue.append(record)
        self.stats.queued_bytes += record.size
        self.stats.queued += 1
        self._ready.set()
        return True

    def _batch(self) -> list[Record]:
        out: list[Record] = []
        size = 0
        for rec in self._queue:
            if out and (len(out) >= self.settings.max_batch_records or size + rec.size > self.settings.max_batch_bytes):
                break
            out.append(rec)
            size += rec.size
        return out

    def _commit(self, n: int) -> None:
        for _ in range(n):
            rec = self._queue.popleft()
            self.stats.queued_bytes -= rec.size
            self.stats.queued -= 1

    async def _linger(self) -> None:
        """Wait for a full batch, or linger_s, whichever first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.linger_s
        while len(self._queue) < self.settings.max_batch_records:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), left)
            except TimeoutError:
                return

    async def run(self) -> None:
        """Send batches forever; retryable failures back off exponentially (with jitter) and resend."""
        backoff = self.settings.backoff_initial_s
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                await self._linger()
            batch = self._batch()
            try:
                refused = await self.exporter.send(batch)
            except RetryableError as exc:
                self.stats.retries += 1
                log.warning("export_retry", extra={"exporter": self.name, "records": len(batch),
                                                   "reason": str(exc), "backoff_s": round(backoff, 2)})
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # jitter, not secrecy
                backoff = min(backoff * 2, self.settings.backoff_max_s)
                continue
            except PermanentError as exc:
                self.stats.rejected += len(batch)
                log.error("export_rejected", extra={"exporter": self.name, "records": len(batch), "reason": str(exc)})
            except Exception:
                # A bug or an unexpected error must not end the daemon: the batch is given up, counted.
                self.stats.rejected += len(batch)
                log.exception("export_failed", extra={"exporter": self.name, "records": len(batch)})
            else:
                self.stats.sent += len(batch) - refused
                self.stats.rejected += refused
            self._commit(len(batch))
            backoff = self.settings.backoff_initial_s

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: one last try at what is queued, bounded in time."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._queue:
                    batch = self._batch()
                    refused = await self.exporter.send(batch)
                    self.stats.sent += len(batch) - refused
                    self.stats.rejected += refused
                    self._commit(len(batch))
        except Exception as exc:  # at exit: said and left, never raised
            log.warning("export_unsent_at_exit", extra={"exporter": self.name, "records": len(self._queue),
                                                        "reason": str(exc) or type(exc).__name__})
