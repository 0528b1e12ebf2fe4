"""The running daemon's HTTP API against its own /openapi.json, and its socket against slow clients.

schemathesis (from PyPI) generates requests from the served document,
valid and invalid, and checks every answer: no 5xx, status codes and
content types as declared, JSON bodies valid against the declared schemas,
schema-invalid requests refused, other methods answered 405 with Allow.
It runs as its own process against the daemon on loopback (a replayed
incident, so the answers hold real drops), bounded by a fixed number of
examples per operation, a fixed seed and a deadline. The stateful phase is
left out: the API is read-only, so there are no links between operations.

Left out: schemathesis's positive_data_acceptance check, which expects
every schema-valid request to be accepted. Three refusals are by design
and cannot be written in a JSON Schema: since after until, a date that
does not exist (02-30) or lies outside int64 nanoseconds, and a /whatif
end that names no pod in the cluster.

Left out: /drops/stream. Its answer never ends by itself (one JSON line per
event, heartbeats between), so every request schemathesis made would wait
for its request timeout and count as an error. Its refusals and its events
are tested in test_drop_stream.py; its description in test_openapi.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from drop_explainer import demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from tests.daemon_support import eventually, get_json, http_get, run_settings, running

INCIDENT = demo.incident_dir()
FLOWS = INCIDENT / "hubble-flows.jsonl"
MAX_EXAMPLES = 20
DEADLINE_S = 45.0
"""The whole schemathesis run: 12-20 s on a 2-core machine, up to 35 s with its cores busy elsewhere."""


async def _replayed_daemon_drops(port: int) -> Any:
    status, body = await get_json(port, "/drops")
    return body if status == 200 and len(body["drops"]) >= 2 else None


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    """0 server errors, 0 schema violations over every operation of /openapi.json, on the real daemon.

    The per-caller rate is off (--api-rate 0): schemathesis is one caller sending ~1,000 requests, and
    with the rate on it would mostly read 429s (documented, so no violation, but nothing learnt).
    """
    settings = run_settings("--source", "replay", "--replay-file", str(FLOWS), "--store-path", ":memory:",
                            "--api-rate", "0")
    async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
        port = daemon.port or 0
        assert await eventually(lambda: _replayed_daemon_drops(port))
        junit = tmp_path / "junit.xml"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schemathesis.cli", "run", f"http://127.0.0.1:{port}/openapi.json",
            "--max-examples", str(MAX_EXAMPLES), "--seed", "20261204", "--workers", "1", "--no-shrink",
            # No stateful phase: the API is read-only, with no links between operations to follow.
            "--phases", "examples,coverage,fuzzing",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--exclude-path", "/drops/stream",  # never ends by itself: see the module's docstring
            "--generation-database", "none", "--request-timeout", "10", "--no-color",
            "--report", "junit", "--report-junit-path", str(junit),
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        started = time.monotonic()
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        elapsed = time.monotonic() - started
        status, health = await http_get(port, "/healthz")
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), report[-6000:]
    tested = {case.get("name") for case in suite.iter("testcase")}
    assert {"GET /drops", "GET /drops/{id}", "GET /whatif", "GET /pods/{pod}/drops", "GET /healthz"} <= tested
    assert "No issues found" in report
    assert elapsed < DEADLINE_S
    assert (status, health) == (200, "ok: ok\n")


async def test_real_answers_validate_against_the_served_schemas() -> None:
    """A real stored drop (with its sample flows) and a real listing validate against /openapi.json's schemas,
    which schemathesis alone would rarely reach (it cannot guess a drop id)."""
    settings = run_settings("--source", "replay", "--replay-file", str(FLOWS), "--store-path", ":memory:")
    async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
        port = daemon.port or 0
        listing = await eventually(lambda: _replayed_daemon_drops(port))
        _, doc = await get_json(port, "/openapi.json")
        status, one = await get_json(port, f"/drops/{listing['drops'][0]['id']}")
    assert status == 200
    assert one["samples"]
    registry: Registry[Any] = Registry().with_resource("urn:api", Resource.from_contents(doc, DRAFT202012))
    for component, instance in (("DropList", listing), ("Drop", one)):
        Draft202012Validator({"$ref": f"urn:api#/components/schemas/{component}"}, registry=registry).validate(
            instance)


async def test_slow_clients_holding_every_connection_neither_starve_healthz_nor_stay() -> None:
    """Slow lorises fill --api-max-connections: /healthz is still answered, and all of them are cut off."""
    settings = run_settings("--source", "replay", "--replay-file", str(FLOWS), "--store-path", ":memory:",
                            "--api-header-timeout", "1", "--api-max-connections", "6")
    async with running(settings, StaticState(load_state(INCIDENT))) as daemon:
        port = daemon.port or 0
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
        try:
            for _, writer in conns:
                writer.write(b"GET /drops HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            answers = [await http_get(port, "/healthz") for _ in range(3)]
            cut = await asyncio.wait_for(asyncio.gather(*(_trickle_until_closed(w, r) for r, w in conns)), 30)
            status, body = await get_json(port, "/drops")
            _, metrics = await http_get(port, "/metrics")
        finally:
            for _, writer in conns:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    assert answers == [(200, "ok: ok\n")] * 3
    assert all(cut)
    assert status == 200
    assert len(body["drops"]) >= 2
    counted = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    # Each of the 6 was either cut off by the deadline or closed for a newer connection.
    assert counted["drop_explainer_api_header_timeouts_total"] + counted[
        "drop_explainer_api_connections_evicted_total"] >= 6
    assert counted["drop_explainer_api_connections_refused_total"] == 0


async def _trickle_until_closed(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> bool:
    """Send one header byte every 50 ms until the server closes the connection; True once it has."""
    while True:
        try:
            writer.write(b"x")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1024), 0.05)
        except TimeoutError:
            continue
        except ConnectionError:
            return True
        if data == b"":
            return True
