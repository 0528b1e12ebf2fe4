"""GET /drops/stream on the running daemon: each new signature once and in order, slow clients cut off.

The daemon runs whole (replay source on an empty file, so nothing arrives by
itself); the test then feeds the incident's recorded flows, and variants of
them on other ports (each a new signature), through the daemon's own
pipeline, and reads the stream over HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from drop_explainer import app, demo
from drop_explainer.api import stream
from drop_explainer.cluster.loading import load_state
from drop_explainer.flows.model import Flow
from drop_explainer.pipeline import StaticState
from drop_explainer.sources.flowfiles import parse_line
from tests.daemon_support import eventually, http_get, run_settings, running

INCIDENT = demo.incident_dir()
READ_S = 20.0


def incident_flows(source_ip: str) -> list[Flow]:
    lines = [ln for ln in (INCIDENT / "hubble-flows.jsonl").read_text().splitlines() if f'"source":"{source_ip}"' in ln]
    flows = [parse_line(ln) for ln in lines]
    assert flows
    assert all(isinstance(f, Flow) for f in flows)
    return [f for f in flows if isinstance(f, Flow)]


CROSS_IP = "10.244.1.10"  # frontend/pod-a -> backend/pod-b:8080
PROBE_IP = "172.18.0.12"  # the kubelet's probe -> backend/pod-b:8080


def hub_of(d: app.Daemon) -> stream.Hub:
    return next(s for _, s in d.pipeline.sinks if isinstance(s, stream.Hub))


@contextlib.asynccontextmanager
async def daemon(tmp: Path, *argv: str) -> AsyncIterator[app.Daemon]:
    empty = tmp / "none.jsonl"
    empty.write_text("")
    settings = run_settings("--source", "replay", "--replay-file", str(empty), "--store-path", ":memory:", *argv)
    async with running(settings, StaticState(load_state(INCIDENT))) as d:
        yield d


@contextlib.asynccontextmanager
async def follow(port: int, query: str = "", token: str | None = None
                 ) -> AsyncIterator[tuple[aiohttp.ClientResponse, Any]]:
    """The open stream, after its `subscribed` line (returned beside it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/drops/stream?format=json{query}",
                                                   headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        first = await next_event(r)
        assert first["event"] == "subscribed", first
        yield r, first


async def next_event(r: aiohttp.ClientResponse, *, skip_heartbeats: bool = True) -> Any:
    while True:
        line = await asyncio.wait_for(r.content.readline(), READ_S)
        assert line, "the stream ended"
        e = json.loads(line)
        if e["event"] != "heartbeat" or not skip_heartbeats:
            return e


def cut_offs(metrics: str) -> dict[str, float]:
    return {s.labels["reason"]: s.value for fam in text_string_to_metric_families(metrics)
            for s in fam.samples if s.name == "drop_explainer_api_stream_cut_off_total"}


async def test_each_new_signature_arrives_once_in_order_and_all_true_adds_every_drop(tmp_path: Path) -> None:
    """Ports 8080, 8081, 8082 (three signatures, repeats between them): three `new` lines, in that order."""
    base = incident_flows(CROSS_IP)[0]
    async with daemon(tmp_path) as d:
        port = d.port or 0
        async with follow(port) as (plain, hello), follow(port, "&all=true") as (every, _):
            assert hello["note"] == "every namespace"
            sent = [8080, 8080, 8081, 8080, 8082, 8081, 8080]
            for i, p in enumerate(sent):
                d.pipeline.process(replace(base, destination_port=p, time_ns=base.time_ns + i))
                await asyncio.sleep(0)
            news = [await next_event(plain) for _ in range(3)]
            assert [e["event"] for e in news] == ["new"] * 3
            assert [e["drop"]["signature"]["port"] for e in news] == [8080, 8081, 8082]
            assert len({e["drop"]["id"] for e in news}) == 3
            first = news[0]["drop"]
            assert first["signature"]["source_workload"] == "frontend/pod-a"
            assert first["signature"]["policies"] == ["backend/default-deny"]
            assert first["explanation"]["fixes"], "a new signature carries its explanation, as /drops does"
            # No repeat comes later: the next line is the next new signature.
            d.pipeline.process(replace(base, destination_port=9090))
            later = await next_event(plain)
            assert (later["event"], later["drop"]["signature"]["port"]) == ("new", 9090)

            seen = [await next_event(every) for _ in range(2 * 3 + len(sent) - 3 + 2)]
            drops = [e["drop"]["signature"]["port"] for e in seen if e["event"] == "drop"]
            assert drops == [*sent, 9090]
            assert [e["drop"]["signature"]["port"] for e in seen if e["event"] == "new"] == [8080, 8081, 8082, 9090]

        hub_of(d).heartbeat_s = 0.2
        async with follow(port, "&namespace=frontend") as (other, _):
            d.pipeline.process(replace(base, destination_port=7070))
            d.pipeline.process(replace(incident_flows(PROBE_IP)[0], destination_port=7071))
            await asyncio.sleep(0)
            # Both are drops of backend/pod-b: a stream of frontend's pods gets neither, so the next line
            # is a heartbeat (every 0.2 s here).
            assert (await next_event(other, skip_heartbeats=False))["event"] == "heartbeat"


async def test_a_client_that_falls_behind_is_cut_off_with_a_reason_and_its_queue_stays_bounded(
        tmp_path: Path) -> None:
    """A burst of new signatures larger than the queue: cut off, the reason is the last line, counted."""
    base = incident_flows(CROSS_IP)[0]
    async with daemon(tmp_path) as d:
        port = d.port or 0
        hub = hub_of(d)
        hub.max_events = 4
        async with follow(port) as (r, _):
            (sub,) = hub.subscribers
            for p in range(1000, 1020):  # no await between them: the writer cannot drain meanwhile
                d.pipeline.process(replace(base, destination_port=p))
                assert sub.queue.qsize() <= 4
            last = await next_event(r)
            while last["event"] != "cut_off":
                last = await next_event(r)
            assert "too slow: 4 events queued unread" in last["reason"]
            assert await asyncio.wait_for(r.content.read(), READ_S) == b"", "the stream ends after the reason"
        assert await eventually(lambda: not hub.subscribers)
        _, metrics = await http_get(port, "/metrics")
        assert cut_offs(metrics).get("slow") == 1.0


async def test_a_client_that_stops_reading_is_cut_off_and_never_grows_memory(tmp_path: Path) -> None:
    """A socket that reads nothing (small receive buffer): the daemon's queue for it stays at its bound,
    the write times out, the connection is closed, and the metric says why."""
    base = incident_flows(CROSS_IP)[0]
    async with daemon(tmp_path) as d:
        port = d.port or 0
        hub = hub_of(d)
        hub.max_events, hub.write_timeout_s = 8, 1.0
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET /drops/stream?format=json HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await eventually(lambda: hub.subscribers)
            (sub,) = hub.subscribers
            p, most = 1, 0
            while sub in hub.subscribers and p < 20_000:
                for _ in range(20):
                    d.pipeline.process(replace(base, destination_port=p))
                    p += 1
                most = max(most, sub.queue.qsize())
                await asyncio.sleep(0.01)
            assert sub not in hub.subscribers, f"still subscribed after {p} new signatures"
            assert most <= 8
            assert sub.reason is not None
            _, metrics = await http_get(port, "/metrics")
            counted = cut_offs(metrics)
            assert counted.get("slow", 0) + counted.get("write_timeout", 0) == 1.0, counted
            # The daemon closed its side: reading what is left ends (EOF or reset) instead of waiting.
            async with asyncio.timeout(READ_S):
                with contextlib.suppress(ConnectionError):
                    while await loop.sock_recv(sock, 65536):
                        pass
        finally:
            sock.close()


async def test_a_healthy_stream_outlives_the_request_deadline_and_is_never_evicted_as_idle(tmp_path: Path) -> None:
    """--api-deadline 1 and --api-max-connections 2: the stream lives on past 1 s, and new connections
    over the cap evict idle ones, never the busy stream."""
    base = incident_flows(CROSS_IP)[0]
    async with daemon(tmp_path, "--api-deadline", "1", "--api-max-connections", "2") as d:
        port = d.port or 0
        hub_of(d).heartbeat_s = 0.3
        async with follow(port) as (r, _):
            for _ in range(6):  # heartbeats past the 1 s deadline
                assert (await next_event(r, skip_heartbeats=False))["event"] == "heartbeat"
            loop = asyncio.get_running_loop()
            idle = [socket.socket() for _ in range(3)]  # connected, never a request: idle
            try:
                for sock in idle:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                assert await eventually(lambda: _evicted(port))
                d.pipeline.process(base)
                e = await next_event(r)
                assert e["event"] == "new", e
            finally:
                for sock in idle:
                    sock.close()
        _, metrics = await http_get(port, "/metrics")
        assert not cut_offs(metrics)


async def _evicted(port: int) -> float:
    """Idle connections closed over the cap so far (the stream's is busy: never one of them)."""
    _, metrics = await http_get(port, "/metrics")
    return sum(s.value for fam in text_string_to_metric_families(metrics) for s in fam.samples
               if s.name == "drop_explainer_api_connections_evicted_total")


async def test_history_filters_are_refused_with_a_reason(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        for query, words in (("since=15m", "the stream starts now"), ("limit=5", "the stream starts now"),
                             ("scope=cluster", "per instance"), ("all=yes", "expected true or false"),
                             ("sinse=1m", "unknown parameter")):
            status, body = await http_get(d.port or 0, f"/drops/stream?{query}")
            assert status == 400, (query, body)
            assert words in body, (query, body)


async def test_the_tail_command_prints_each_new_signature_and_the_reason_it_was_cut_off(tmp_path: Path) -> None:
    """`drop-explainer tail -o json -n backend` as a process: new signatures in order, then the reason, exit 3."""
    base = incident_flows(CROSS_IP)[0]
    async with daemon(tmp_path) as d:
        port = d.port or 0
        hub = hub_of(d)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "drop_explainer.cli", "tail", "--url", f"http://127.0.0.1:{port}", "-o", "json",
            "-n", "backend", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(stream.__file__).parents[2])})
        try:
            assert proc.stdout is not None
            hello = json.loads(await asyncio.wait_for(proc.stdout.readline(), READ_S))
            assert hello["event"] == "subscribed"
            for p in (8080, 8080, 8081):
                d.pipeline.process(replace(base, destination_port=p))
            got = [json.loads(await asyncio.wait_for(proc.stdout.readline(), READ_S)) for _ in range(2)]
            assert [(e["event"], e["drop"]["signature"]["port"]) for e in got] == [("new", 8080), ("new", 8081)]
            hub.close("test: the daemon ends it")
            out, err = await asyncio.wait_for(proc.communicate(), READ_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 3, err
        assert json.loads(out.decode().splitlines()[-1])["event"] == "cut_off"
        assert "the daemon ended the stream: test: the daemon ends it" in err.decode()
        refused = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "drop_explainer.cli", "tail", "--url", f"http://127.0.0.1:{port}",
            "-n", "Not_A_Namespace", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(stream.__file__).parents[2])})
        out, err = await asyncio.wait_for(refused.communicate(), READ_S)
        assert refused.returncode == 1
        assert "400" in err.decode()
        assert "not a valid namespace name" in err.decode()


async def test_plain_curl_gets_text_lines_for_people(tmp_path: Path) -> None:
    """No Accept, no format: text, the headline line of each new signature and its explanation."""
    base = incident_flows(CROSS_IP)[0]
    async with daemon(tmp_path) as d, aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{d.port}/drops/stream") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        hello = await asyncio.wait_for(r.content.readline(), READ_S)
        assert hello == b"# following new signatures; every namespace\n"
        d.pipeline.process(base)
        head = (await asyncio.wait_for(r.content.readline(), READ_S)).decode()
        assert head.startswith("NEW frontend/pod-a -> backend/backend-7d4b9c TCP/8080 (ingress) "
                               "policies: backend/default-deny traps: - [id ")
        body = (await asyncio.wait_for(r.content.readline(), READ_S)).decode()
        assert body.startswith("DENIED frontend/pod-a -> backend/pod-b TCP/8080")


async def test_a_stopping_daemon_ends_its_streams_with_the_reason_instead_of_waiting_for_them(
        tmp_path: Path) -> None:
    """SIGTERM (the daemon task cancelled) with a stream open: the client reads why, the stop does not hang."""
    async with aiohttp.ClientSession() as s:
        async with asyncio.timeout(40):  # aiohttp would wait 60 s for a handler still streaming
            async with daemon(tmp_path) as d:
                r = await s.get(f"http://127.0.0.1:{d.port}/drops/stream?format=json")
                assert (await next_event(r))["event"] == "subscribed"
        try:
            rest = [json.loads(ln) for ln in (await asyncio.wait_for(r.content.read(), READ_S)).splitlines()]
        finally:
            r.release()
    assert rest[-1] == {"event": "cut_off", "reason": "the daemon is stopping; reconnect to its next instance"}
