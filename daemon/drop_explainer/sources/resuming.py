"""The one resumable-stream loop that every network flow source plugs into.

Hubble, Goldmane and Antrea differ in their wire (request, messages,
normalisation) and agree on everything around it: reconnect with capped
backoff, resume from the newest flow time (the one committed to the store
before a restart, else the newest received), drop what the resume replays,
keep a bounded drop-oldest queue in front of the consumer, and count all of
it. That shared part lives here once; a source supplies a ``StreamAdapter``.

Writing a source (the whole contract)::

    class AntreaAdapter:
        origin = "antrea"            # == Flow.origin of its flows; the resume key
        target = "antrea-flow-aggregator:4739"

        def deduplicator(self) -> resuming.Deduplicator:
            return dedup.ReplayFilter(window_ns=3 * NS)   # or any is_repeat()

        async def read_call(self, resume: resuming.Resume, intake: resuming.Intake) -> None:
            request = build_request(since_ns=resume.since_ns)   # None: the adapter's own start
            async with open_call(request) as call:
                intake.connected()
                async for raw in call:
                    intake.received(1)
                    try:
                        flows = [normalise.flow_from_proto(decode(raw))]
                    except normalise.MalformedFlow as exc:
                        intake.skip(exc.reason)   # counted by reason, never fatal
                        continue
                    intake.flows(flows)
            # a clean end returns; a failure raises resuming.StreamFailure

    source = resuming.ResumableStream(AntreaAdapter(), resuming.ResumeSettings(), checkpoint=store)
    async for flow in source.stream_flows(): ...

Why the resume point is what it is:

- ``since`` is the newest flow time *received* in this process, or at
  start the newest time *committed* to the store by the last one
  (``Checkpoint``), so a kill -9 loses nothing the server still holds.
  It is never later than the local clock (a flow stamped in the future
  must not make us ask for the future and get nothing), and a checkpoint
  is never used further back than ``look_back_ns`` (a restart after a week
  must not replay a week). A reconnect within one process resumes exactly.
- ``overlap_ns`` is taken off because relays merge nodes only roughly in
  time order; the exact repeats this replays are dropped by the adapter's
  ``Deduplicator`` and counted in ``stats.duplicates``.
- After a restart the deduplicator is empty, so flows at or before the
  committed checkpoint are the repeats; they are dropped and counted too.
- A failure before any flow arrived still resumes (from the checkpoint),
  instead of asking for neither ``since`` nor ``number``.
- ``StreamFailure(restart_live=True)`` (a message too big to ever receive)
  resumes once at the live end, or the resume would replay it forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from drop_explainer.flows import model
from drop_explainer.normalise import checking
from drop_explainer.sources import errors, queueing

log = logging.getLogger(__name__)

_S: Final = 1_000_000_000


class Checkpoint(Protocol):
    """Where the newest committed flow time per origin survives a restart (the drop store)."""

    def resume_point(self, origin: str) -> int | None:
        """Newest flow time (ns) of this origin committed durably, or None."""
        ...


class Deduplicator(Protocol):
    """Says whether a flow was already delivered (and remembers it if not)."""

    def is_repeat(self, flow: model.Flow) -> bool: ...


class StreamFailure(errors.SourceError):
    """One call of a stream failed; the loop logs it, waits, and resumes.

    ``code`` is a short constant (``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``);
    ``tls`` marks a TLS failure (counted apart: it needs an operator) and
    ``hint`` says what it probably means (``channels.tls_failure``);
    ``restart_live`` says a message was too big ever to receive (counted as
    oversized): the next call starts at the live end.
    """

    def __init__(self, message: str, *, code: str, tls: bool = False, hint: str | None = None,
                 restart_live: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.tls = tls
        self.hint = hint
        self.restart_live = restart_live


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the next call starts."""

    since_ns: int | None
    """Ask for flows from here (ns since the epoch); None = the adapter's own start (live, or its initial replay)."""
    first: bool
    """The first call of this process."""
    from_checkpoint: bool
    """since_ns came from the store (a restart), not from this process's stream."""


@dataclass(frozen=True, slots=True)
class ResumeSettings:
    """What every resumable source shares."""

    queue_size: int = 10_000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    overlap_ns: int = 1 * _S
    """Resume this far before the newest flow time (relay order across nodes is only rough)."""
    look_back_ns: int = 600 * _S
    """Never resume further back than this from now; 0 = never resume from the checkpoint."""
    tls_error_every: int = 20
    """A TLS failure is logged at ERROR on the first and then every this many consecutive failures.

    It needs an operator (a certificate to configure or renew), so it must
    not go quiet after the first line; at the 30 s backoff cap, 20 is one
    line every ~10 minutes.
    """

    def validate(self) -> None:
        if self.queue_size < 1:
            raise errors.ConfigError("queue_size: must be at least 1")
        if self.tls_error_every < 1:
            raise errors.ConfigError("tls_error_every: must be at least 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise errors.ConfigError("backoff: need 0 < backoff_initial_s <= backoff_max_s")
        if self.overlap_ns < 0 or self.look_back_ns < 0:
            raise errors.ConfigError("overlap_ns and look_back_ns: must not be negative")


@dataclass(slots=True)
class StreamStats:
    """Live counters of one resumable stream; the metrics exporter reads them at scrape time."""

    received: int = 0
    """Messages read from the stream, of any kind."""
    flows: int = 0
    """Flows normalised and queued."""
    delivered: int = 0
    """Flows handed to the consumer."""
    malformed: int = 0
    """Messages that did not decode or flows that failed normalisation (by reason in skipped_by_reason)."""
    oversized: int = 0
    """Messages over the source's size cap (skipped) or over the transport's (the call failed)."""
    non_flow: int = 0
    """Responses that are not flows (node_status, lost_events...), skipped; by kind in non_flow_by_kind."""
    filtered: int = 0
    """Flows the server sent that we did not ask for, dropped here."""
    lost_events: int = 0
    """Events the server says it lost on its side."""
    overflow: int = 0
    """Flows discarded because the consumer was behind (drop-oldest)."""
    duplicates: int = 0
    """Flows a resume replayed, dropped."""
    clamped_times: int = 0
    """Flows stamped too far in the future, set to now (normalise.checking)."""
    truncated: int = 0
    """Flows with strings, labels or lists cut to the size caps (normalise.checking)."""
    resumed: int = 0
    """Calls that resumed from a since time (from the checkpoint or the stream)."""
    reconnects: int = 0
    tls_failures: int = 0
    connected: bool = False
    last_flow_time: int | None = None
    """Newest flow time received, ns since the epoch."""
    last_error: Exception | None = None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    """malformed and oversized, by reason: only what a peer got wrong."""
    non_flow_by_kind: dict[str, int] = field(default_factory=dict)
    """Valid responses without a flow, by kind: not malformed, and not counted as such."""

    def skip(self, reason: str) -> None:
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1


class Intake:
    """What an adapter reports into during one call; it counts, and queues the flows."""

    def __init__(self, stream: ResumableStream, queue: queueing.FlowQueue) -> None:
        self._stream = stream
        self._queue = queue

    def connected(self, *, clear_error: bool = True) -> None:
        """The call is up (headers or the transport said so), even if no flow arrived yet.

        ``clear_error=False`` for a server that may still refuse the call
        after the connection is up (Goldmane's stream limit): then the last
        error stays until a message arrives.
        """
        self._stream._note_connected(clear_error=clear_error)

    def received(self, n: int = 1) -> None:
        stats = self._stream.stats
        stats.received += n
        stats.last_error = None

    def skip(self, reason: str) -> None:
        """One message or flow could not be used (a malformed one); counted by reason."""
        stats = self._stream.stats
        stats.malformed += 1
        stats.skip(reason)

    def oversized(self) -> None:
        """One message was over the size cap and skipped undecoded."""
        stats = self._stream.stats
        stats.oversized += 1
        stats.skip("oversized")

    def non_flow(self, kind: str) -> None:
        """A valid response that carries no flow."""
        stats = self._stream.stats
        stats.non_flow += 1
        stats.non_flow_by_kind[kind] = stats.non_flow_by_kind.get(kind, 0) + 1

    def filtered(self) -> None:
        """A valid flow of a kind not asked for (a server that ignores part of the filter)."""
        self._stream.stats.filtered += 1

    def lost(self, n: int) -> None:
        """The server reported ``n`` events lost on its side."""
        self._stream.stats.lost_events += n

    def flows(self, flows: Sequence[model.Flow]) -> None:
        """Normalised flows, in stream order; each is checked (normalise.checking) before it goes on."""
        stats, clock = self._stream.stats, self._stream._clock
        checked: list[model.Flow] = []
        for flow in flows:
            try:
                result = checking.check(flow, now_ns=clock)
            except checking.InvalidFlow as exc:
                self.skip(exc.reason)
                log.debug("flow_skipped", extra={"origin": self._stream.adapter.origin, "reason": exc.reason,
                                                 "detail": exc.detail})
                continue
            stats.clamped_times += result.clamped
            stats.truncated += result.truncated
            checked.append(result.flow)
        self._stream._take(checked, self._queue)


class StreamAdapter(Protocol):
    """The wire half of a source: one call, from a resume point, into an Intake."""

    origin: str
    """Flow.origin of its flows, and the key of its resume point in the Checkpoint."""
    target: str
    """For logs: where it connects."""

    def deduplicator(self) -> Deduplicator:
        """A fresh de-duplicator for replayed flows (called once per stream)."""
        ...

    async def read_call(self, resume: Resume, intake: Intake) -> None:
        """Open one call starting at ``resume``, feed ``intake`` until the call ends.

        Return on a clean end of the stream; raise StreamFailure on failure.
        Other exceptions are bugs and end the source.
        """
        ...


class ResumableStream:
    """Runs an adapter forever: reconnects, resumes, de-duplicates, counts, queues."""

    def __init__(self, adapter: StreamAdapter, settings: ResumeSettings, *, checkpoint: Checkpoint | None = None,
                 follow: bool = True, clock: Callable[[], int] = time.time_ns,
                 rng: random.Random | None = None) -> None:
        settings.validate()
        self.adapter = adapter
        self.settings = settings
        self.stats = StreamStats()
        self._checkpoint = checkpoint
        self._follow = follow
        self._clock = clock
        self._rng = rng or random.Random()
        self._dedup = adapter.deduplicator()
        self._restored: int | None = None
        """The checkpoint this process started from; flows at or before it were committed already."""
        self._live_end = False
        self._first = True
        self._connected_at: float | None = None

    async def stream_flows(self) -> AsyncGenerator[model.Flow, None]:
        """Yield flows until cancelled (follow) or until the server has sent all (no follow)."""
        queue = queueing.FlowQueue(self.settings.queue_size, self.stats)
        reader = asyncio.create_task(self._read_forever(queue), name=f"{self.adapter.origin}-reader")
        reader.add_done_callback(lambda task: queue.finish(None if task.cancelled() else task.exception()))
        items = queue.items
        try:
            while True:
                if not items:
                    await queue.wait()
                    if not items and queue.finished:
                        if queue.closed_by is not None:
                            raise queue.closed_by
                        return
                    continue
                self.stats.delivered += 1
                yield items.popleft()
        finally:
            reader.cancel()
            await asyncio.wait([reader])

    def resume(self) -> Resume:
        """Where the next call starts (see the module docstring for why); consumed by that call."""
        resume = self.peek_resume()
        self._first = False
        if resume.from_checkpoint and self._restored is None and self._checkpoint is not None:
            self._restored = self._checkpoint.resume_point(self.adapter.origin)
        return resume

    def peek_resume(self) -> Resume:
        """Where the next call would start, without starting it."""
        first = self._first
        if self._live_end:
            return Resume(None, first=first, from_checkpoint=False)
        newest = self.stats.last_flow_time
        from_checkpoint = False
        if newest is None and self._checkpoint is not None and self.settings.look_back_ns:
            newest = self._checkpoint.resume_point(self.adapter.origin)
            from_checkpoint = newest is not None
        if newest is None:
            return Resume(None, first=first, from_checkpoint=False)
        now = self._clock()
        since = min(newest, now) - self.settings.overlap_ns
        if from_checkpoint:
            since = max(since, now - self.settings.look_back_ns)
        return Resume(since, first=first, from_checkpoint=from_checkpoint)

    # --- the reader ---------------------------------------------------------

    async def _read_forever(self, queue: queueing.FlowQueue) -> None:
        settings = self.settings
        delay, failures = settings.backoff_initial_s, 0
        intake = Intake(self, queue)
        while True:
            newest = self.stats.last_flow_time
            self._connected_at = None
            resume = self.resume()
            if resume.since_ns is not None:
                self.stats.resumed += 1
            failure: StreamFailure | None = None
            try:
                await self.adapter.read_call(resume, intake)
                if not self._follow:
                    return
            except StreamFailure as exc:
                failure = exc
            finally:
                self.stats.connected = False
            if self._connection_worked(newest):
                delay, failures = settings.backoff_initial_s, 0
            self._note_end(failure, failures=failures)
            failures += 1
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.0))
            delay = min(delay * 2, settings.backoff_max_s)
            self.stats.reconnects += 1

    def _connection_worked(self, newest_before: int | None) -> bool:
        """Reset the backoff only after a call that got new flows or stayed up a while.

        Flows a resume replays do not count: a server that accepts, replays
        and dies at once has not recovered, and keeps backing off (quietly).
        """
        if self._connected_at is None:
            return False
        lasted = asyncio.get_running_loop().time() - self._connected_at
        return self.stats.last_flow_time != newest_before or lasted >= self.settings.backoff_max_s

    def _note_connected(self, *, clear_error: bool) -> None:
        self.stats.connected = True
        if clear_error:
            self.stats.last_error = None
        self._connected_at = asyncio.get_running_loop().time()
        log.info("stream_connected", extra={"origin": self.adapter.origin, "target": self.adapter.target})

    def _note_end(self, failure: StreamFailure | None, *, failures: int) -> None:
        """Warn on the first failure after a working call, then retry quietly; TLS failures are repeated.

        ``failures``: consecutive failed calls before this one (0 after a working call).
        """
        first = failures == 0
        extra: dict[str, object] = {"origin": self.adapter.origin, "target": self.adapter.target}
        if failure is None:
            log.log(logging.WARNING if first else logging.DEBUG, "stream_ended", extra=extra)
            return
        self._live_end = failure.restart_live
        if failure.restart_live:
            self.stats.oversized += 1
            self.stats.skip("oversized")
        if failure.tls:
            self.stats.tls_failures += 1
            self.stats.last_error = errors.TlsVerificationFailed(self.adapter.target, str(failure), hint=failure.hint)
            loud = failures % self.settings.tls_error_every == 0
            log.log(logging.ERROR if loud else logging.DEBUG, "stream_tls_failed",
                    extra={**extra, "details": str(failure), "hint": failure.hint, "failures": failures + 1})
            return
        # The transport's own error, when there is one, says more than our wrapper.
        self.stats.last_error = failure.__cause__ if isinstance(failure.__cause__, Exception) else failure
        log.log(logging.WARNING if first else logging.DEBUG, "stream_failed",
                extra={**extra, "code": failure.code, "details": str(failure)})

    def _take(self, flows: Sequence[model.Flow], queue: queueing.FlowQueue) -> None:
        stats = self.stats
        restored, dedup = self._restored, self._dedup
        fresh: list[model.Flow] = []
        for flow in flows:
            if (restored is not None and flow.time_ns <= restored) or dedup.is_repeat(flow):
                stats.duplicates += 1
                continue
            fresh.append(flow)
        if not fresh:
            return
        newest = max(flow.time_ns for flow in fresh)
        if stats.last_flow_time is None or newest > stats.last_flow_time:
            stats.last_flow_time = newest
        # Past the message that broke the call, resuming with since is safe again.
        self._live_end = False
        stats.flows += len(fresh)
        queue.put_many(fresh)
