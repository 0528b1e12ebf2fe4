"""The export sink, its byte-bounded channels and the JSON lines file (the Collector tests are integration)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sink_fixtures import MakeDrop

from drop_explainer import cli
from drop_explainer.export.channel import Channel, ChannelSettings, PermanentError, RetryableError
from drop_explainer.export.jsonl import FileExporter, FileSettings
from drop_explainer.export.record import NEW, UPDATE, Record, new_record
from drop_explainer.export.sink import ExportPolicy, ExportSink
from drop_explainer.settings import Settings, SettingsError, from_args


class Scripted:
    """An exporter that fails as told, then takes everything; what it took is kept."""

    name = "scripted"

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        self.failures = list(failures)
        self.taken: list[Record] = []
        self.calls = 0

    async def send(self, batch: Sequence[Record]) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.taken.extend(batch)
        return 0

    async def close(self) -> None:
        return None


def _record(make_drop: MakeDrop, port: int = 8080) -> Record:
    return new_record(make_drop(port=port, new=True), None, 1)


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_full_queue_refuses_and_counts_without_waiting(make_drop: MakeDrop) -> None:
    """The bound is in bytes: records past it are refused at once, counted as overflow."""
    rec = _record(make_drop)
    channel = Channel(Scripted(), ChannelSettings(max_queue_bytes=rec.size * 3))
    results = [channel.offer(_record(make_drop, 9000 + i)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert channel.stats.overflow == 2
    assert channel.stats.queued_bytes <= rec.size * 3 + 64  # ports differ by digits only


async def test_retryable_failures_keep_the_batch_and_resend_it(make_drop: MakeDrop) -> None:
    exporter = Scripted([RetryableError("UNAVAILABLE"), RetryableError("UNAVAILABLE")])
    channel = Channel(exporter, ChannelSettings(linger_s=0.01, backoff_initial_s=0.01, backoff_max_s=0.02))
    for i in range(3):
        channel.offer(_record(make_drop, 9000 + i))
    task = asyncio.create_task(channel.run())
    try:
        await _until(lambda: channel.stats.sent == 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert channel.stats.retries == 2
    assert [r.attributes["server.port"] for r in exporter.taken] == [9000, 9001, 9002]
    assert channel.stats.queued == 0
    assert channel.stats.queued_bytes == 0


async def test_a_permanent_refusal_drops_the_batch_and_counts_it(make_drop: MakeDrop) -> None:
    exporter = Scripted([PermanentError("INVALID_ARGUMENT")])
    channel = Channel(exporter, ChannelSettings(linger_s=0.01))
    channel.offer(_record(make_drop, 9000))
    task = asyncio.create_task(channel.run())
    try:
        await _until(lambda: channel.stats.rejected == 1)
        channel.offer(_record(make_drop, 9001))
        await _until(lambda: channel.stats.sent == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.attributes["server.port"] for r in exporter.taken] == [9001]


def _sink(policy: ExportPolicy) -> tuple[ExportSink, Channel]:
    channel = Channel(Scripted(), ChannelSettings())
    return ExportSink([channel], policy), channel


def _queued(channel: Channel) -> list[Record]:
    return list(channel._queue)


def test_a_new_signature_is_one_record_and_repeats_are_only_counted(make_drop: MakeDrop) -> None:
    sink, channel = _sink(ExportPolicy())
    sink.handle(make_drop(new=True, packets=2))
    for _ in range(10):
        sink.handle(make_drop(packets=3))
    recs = _queued(channel)
    assert [r.event for r in recs] == [NEW]
    assert recs[0].attributes["drop_explainer.count"] == 2
    assert sink.emit_updates(now_ns=5) == 1
    update = _queued(channel)[1]
    assert update.event == UPDATE
    assert update.attributes["drop_explainer.count"] == 32
    assert update.attributes["drop_explainer.count.delta"] == 30
    assert update.body == recs[0].body
    assert sink.emit_updates() == 0  # nothing new since


def test_sampled_updates_carry_the_skipped_counts_into_the_next(make_drop: MakeDrop) -> None:
    sink, channel = _sink(ExportPolicy(sample=0.5))
    sink.handle(make_drop(new=True))
    made = []
    for _ in range(4):
        sink.handle(make_drop(packets=1))
        made.append(sink.emit_updates())
    assert made == [0, 1, 0, 1]
    deltas = [r.attributes["drop_explainer.count.delta"] for r in _queued(channel) if r.event == UPDATE]
    assert deltas == [2, 2]
    assert sink.stats.sampled_out == 2


def test_only_new_signatures_when_updates_are_off(make_drop: MakeDrop) -> None:
    sink, channel = _sink(ExportPolicy(updates=False))
    sink.handle(make_drop(new=True))
    sink.handle(make_drop())
    sink.handle(make_drop(port=1, new=False))  # known from an earlier run: not new, no update wanted
    assert sink.emit_updates() == 0
    assert [r.event for r in _queued(channel)] == [NEW]


def test_updates_only_for_a_signature_known_before(make_drop: MakeDrop) -> None:
    """After a restart the store knows the signature: no new record, its drops here go out as an update."""
    sink, channel = _sink(ExportPolicy(new=False))
    sink.handle(make_drop(packets=4))
    assert _queued(channel) == []
    assert sink.emit_updates() == 1
    assert _queued(channel)[0].attributes["drop_explainer.count.delta"] == 4


async def test_the_file_rotates_by_size_and_keeps_max_backups(make_drop: MakeDrop, tmp_path: Path) -> None:
    path = tmp_path / "drops.jsonl"
    line = len(_record(make_drop).json_line({"service.name": "drop-explainer"})) + 1
    exporter = FileExporter(FileSettings(str(path), max_bytes=line * 3 + 10, max_backups=2),
                            {"service.name": "drop-explainer"})
    try:
        for i in range(20):
            await exporter.send([_record(make_drop, 10000 + i)])
    finally:
        await exporter.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["drops.jsonl", "drops.jsonl.1", "drops.jsonl.2"]
    ports = []
    for name in ("drops.jsonl.2", "drops.jsonl.1", "drops.jsonl"):
        text = (tmp_path / name).read_text()
        assert len(text.encode()) <= line * 3 + 10
        ports += [json.loads(x)["attributes"]["server.port"] for x in text.splitlines()]
    assert ports == list(range(10000 + 20 - len(ports), 10020))  # the newest kept, in order, none split
    doc = json.loads((tmp_path / "drops.jsonl").read_text().splitlines()[-1])
    assert doc["eventName"] == NEW
    assert doc["attributes"]["drop_explainer.policy"] == ["api/default-deny"]
    assert doc["resource"] == {"service.name": "drop-explainer"}


def _settings(*argv: str) -> Settings:
    return from_args(cli.build_parser().parse_args(["run", *argv]), env={})


@pytest.mark.parametrize(("argv", "message"), [
    (("--export-what", "new,everything"), "--export-what"),
    (("--export-update-sample", "1.5"), "--export-update-sample"),
    (("--export-update-interval", "0"), "--export-update-interval"),
    (("--export-otlp-endpoint", "127.0.0.1:4317", "--export-otlp-headers", "authorization"), "name=value"),
    (("--export-otlp-endpoint", "127.0.0.1:4317", "--export-otlp-tls-cert", "c.pem"), "go together"),
    (("--export-otlp-endpoint", "127.0.0.1:4317", "--export-otlp-compression", "zstd"), "none or gzip"),
    (("--export-queue-bytes", "10"), "--export-queue-bytes"),
])
def test_bad_export_options_are_refused_naming_the_option(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        _settings(*argv)


def test_headers_keep_a_token_with_equals_signs() -> None:
    s = _settings("--export-otlp-endpoint", "127.0.0.1:4317", "--export-otlp-headers",
                  "authorization=Bearer abc==,x-scope-orgid=tenant-1")
    assert s.export.otlp is not None
    assert dict(s.export.otlp.headers) == {"authorization": "Bearer abc==", "x-scope-orgid": "tenant-1"}


def test_a_silent_signature_is_forgotten_and_counted_afresh_when_it_returns(make_drop: MakeDrop) -> None:
    """The update table stays bounded: silent signatures leave it; a returning one is an update, not new."""
    sink, channel = _sink(ExportPolicy(forget_after_ticks=2, max_signatures=1))
    sink.handle(make_drop(new=True))
    sink.handle(make_drop(port=1, new=True))  # the table is full: recorded as new, not tracked
    assert sink.stats.untracked == 1
    sink.emit_updates()
    sink.emit_updates()
    sink.handle(make_drop(port=1, packets=5))  # room again: tracked from here
    assert sink.emit_updates() == 1
    assert _queued(channel)[-1].attributes["server.port"] == 1
    assert _queued(channel)[-1].attributes["drop_explainer.count.delta"] == 5


async def test_an_unexpected_error_gives_up_the_batch_but_not_the_sender(make_drop: MakeDrop) -> None:
    exporter = Scripted([ValueError("a bug")])
    channel = Channel(exporter, ChannelSettings(linger_s=0.01))
    channel.offer(_record(make_drop, 9000))
    task = asyncio.create_task(channel.run())
    try:
        await _until(lambda: channel.stats.rejected == 1)
        channel.offer(_record(make_drop, 9001))
        await _until(lambda: channel.stats.sent == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.attributes["server.port"] for r in exporter.taken] == [9001]
