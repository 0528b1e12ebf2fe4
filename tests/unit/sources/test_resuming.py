"""The one resumable-stream loop: where each call resumes, what it drops as replayed, and what it counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from drop_explainer.flows import model
from drop_explainer.sources import dedup, resuming

S = 1_000_000_000
NOW = 1_764_800_000 * S
Call = Callable[[resuming.Resume, resuming.Intake], None]


def flow(t: int, port: int = 80) -> model.Flow:
    return model.Flow(t, model.Verdict.DROPPED, model.Endpoint(model.EndpointKind.POD, "10.0.0.1", "a", "a"),
                      model.Endpoint(model.EndpointKind.POD, "10.0.0.2", "b", "b"), destination_port=port,
                      origin="test")


class Scripted:
    """An adapter whose calls are scripted: each step feeds flows, fails, or ends the stream."""

    origin = "test"
    target = "scripted"

    def __init__(self, steps: Sequence[Call]) -> None:
        self.steps = list(steps)
        self.resumes: list[resuming.Resume] = []

    def deduplicator(self) -> resuming.Deduplicator:
        return dedup.ReplayFilter(window_ns=10 * S)

    async def read_call(self, resume: resuming.Resume, intake: resuming.Intake) -> None:
        self.resumes.append(resume)
        if not self.steps:
            await asyncio.Event().wait()  # a quiet, healthy stream
        self.steps.pop(0)(resume, intake)


class Checkpoint:
    def __init__(self, at: int | None) -> None:
        self.at = at

    def resume_point(self, origin: str) -> int | None:
        return self.at if origin == "test" else None


def send(*flows: model.Flow) -> Call:
    def step(resume: resuming.Resume, intake: resuming.Intake) -> None:
        intake.connected()
        intake.received(len(flows))
        intake.flows(flows)
        raise resuming.StreamFailure("gone", code="UNAVAILABLE")
    return step


def fail(*, restart_live: bool = False) -> Call:
    def step(resume: resuming.Resume, intake: resuming.Intake) -> None:
        raise resuming.StreamFailure("refused", code="UNAVAILABLE", restart_live=restart_live)
    return step


async def run(adapter: Scripted, *, checkpoint: Checkpoint | None = None, calls: int,
              settings: resuming.ResumeSettings | None = None) -> tuple[resuming.ResumableStream, list[model.Flow]]:
    stream = resuming.ResumableStream(
        adapter, settings or resuming.ResumeSettings(backoff_initial_s=0.001, backoff_max_s=0.002),
        checkpoint=checkpoint, clock=lambda: NOW)
    got: list[model.Flow] = []

    async def consume() -> None:
        async for f in stream.stream_flows():
            got.append(f)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        while len(adapter.resumes) < calls:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait([task])
    return stream, got


async def test_a_restart_resumes_from_the_committed_checkpoint_less_the_overlap() -> None:
    """The first call of a new process asks since = checkpoint - overlap, and says it came from the store."""
    adapter = Scripted([])
    await run(adapter, checkpoint=Checkpoint(NOW - 60 * S), calls=1)
    assert adapter.resumes[0] == resuming.Resume(NOW - 61 * S, first=True, from_checkpoint=True)


async def test_the_checkpoint_is_bounded_by_the_look_back() -> None:
    """A checkpoint a week old resumes only look_back_ns back, not a week."""
    adapter = Scripted([])
    settings = resuming.ResumeSettings(look_back_ns=600 * S)
    await run(adapter, checkpoint=Checkpoint(NOW - 7 * 86400 * S), calls=1, settings=settings)
    assert adapter.resumes[0].since_ns == NOW - 600 * S


async def test_a_failed_first_call_still_resumes_from_the_checkpoint() -> None:
    """No flow arrived before the failure: the retry asks since the checkpoint again, never for nothing."""
    adapter = Scripted([fail(), fail()])
    await run(adapter, checkpoint=Checkpoint(NOW - 60 * S), calls=3)
    assert [r.since_ns for r in adapter.resumes] == [NOW - 61 * S] * 3


async def test_flows_at_or_before_the_checkpoint_are_counted_as_resume_duplicates() -> None:
    """After a restart the replayed flows were committed by the previous process: dropped and counted."""
    checkpoint = NOW - 60 * S
    adapter = Scripted([send(flow(checkpoint - S), flow(checkpoint), flow(checkpoint + S))])
    stream, got = await run(adapter, checkpoint=Checkpoint(checkpoint), calls=2)
    assert [f.time_ns for f in got] == [checkpoint + S]
    assert stream.stats.duplicates == 2
    assert stream.stats.resumed == 2


async def test_a_reconnect_resumes_from_the_newest_flow_received_and_drops_exact_repeats() -> None:
    """Within one process the newest received time (not the checkpoint) is the resume point."""
    adapter = Scripted([send(flow(NOW - 10 * S)), send(flow(NOW - 10 * S), flow(NOW - 5 * S))])
    stream, got = await run(adapter, checkpoint=Checkpoint(None), calls=3)
    assert adapter.resumes[0].since_ns is None
    assert adapter.resumes[1] == resuming.Resume(NOW - 11 * S, first=False, from_checkpoint=False)
    assert adapter.resumes[2].since_ns == NOW - 6 * S
    assert [f.time_ns for f in got] == [NOW - 10 * S, NOW - 5 * S]
    assert stream.stats.duplicates == 1


async def test_a_flow_from_the_future_never_makes_the_resume_ask_for_the_future() -> None:
    """A flow a year ahead is clamped to now by the checks, so the resume asks from about now."""
    adapter = Scripted([send(flow(NOW + 365 * 86400 * S))])
    stream, _ = await run(adapter, calls=2)
    assert stream.stats.clamped_times == 1
    since = adapter.resumes[1].since_ns
    assert since is not None
    assert since <= NOW


async def test_a_message_too_big_to_receive_resumes_once_at_the_live_end() -> None:
    """restart_live: the next call starts live (else the resume replays the message forever), counted oversized."""
    adapter = Scripted([send(flow(NOW - 10 * S)), fail(restart_live=True)])
    stream, _ = await run(adapter, calls=3)
    assert adapter.resumes[2].since_ns is None
    assert stream.stats.oversized == 1


async def test_invalid_flows_are_counted_by_reason_and_the_rest_delivered() -> None:
    """A bad IP in one flow of a batch skips that flow only, counted under bad-ip."""
    bad = model.Flow(NOW - S, model.Verdict.DROPPED, model.Endpoint(ip="999.999.1.1"), model.Endpoint(ip="::1"))
    adapter = Scripted([send(bad, flow(NOW - S))])
    stream, got = await run(adapter, calls=2)
    assert len(got) == 1
    assert stream.stats.skipped_by_reason == {"bad-ip": 1}
