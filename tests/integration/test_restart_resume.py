"""kill -9 while Hubble keeps publishing: after the restart every flow published while down is recorded once.

The daemon is a real process (SIGKILL gives it no chance to flush); the
test Hubble server keeps its history, as Cilium's ring buffer does, and the
restarted daemon resumes from the newest flow time its store committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from drop_explainer.testing.hubble_server import FakeHubbleServer, policy_denied_syn
from tests.daemon_support import eventually, get_json

S = 1_000_000_000
STARWARS = Path(__file__).resolve().parents[1] / "fixtures" / "starwars" / "state.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(target: str, store: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "drop_explainer.cli", "run", "--listen", "127.0.0.1",
                             "--port", str(port), "--events", "false", "--mode", "single", "--auth", "none",
                             "--state", str(STARWARS),
                             "--log-format", "json", "--hubble-target", target, "--store-path", store],
                            stderr=subprocess.DEVNULL)


async def recorded_flows(port: int) -> int | None:
    """Flows counted in the store (GET /drops flushes first, so this is what is committed)."""
    with contextlib.suppress(aiohttp.ClientError):
        status, body = await get_json(port, "/drops")
        if status == 200:
            return sum(int(d["flows"]) for d in body["drops"])
    return None


async def until_recorded(port: int, expected: int) -> int | None:
    return await eventually(lambda: _equals(recorded_flows(port), expected), timeout=30)


async def _equals(pending: Any, expected: int) -> int | None:
    got = await pending
    return got if got == expected else None


def publish(server: FakeHubbleServer, start_ns: int, first_port: int, count: int) -> None:
    for i in range(count):
        server.push(policy_denied_syn(start_ns + i * 10_000_000, source_port=first_port + i))


async def test_flows_published_while_the_daemon_was_killed_are_recorded_once_after_restart(tmp_path: Path) -> None:
    """20 before the kill, 30 while down, 10 after: the store counts 60, not 50 (lost) nor more (replayed)."""
    store = str(tmp_path / "drops.db")
    now = time.time_ns() - 60 * S
    async with FakeHubbleServer() as hubble:
        port = free_port()
        proc = start_daemon(hubble.target, store, port)
        try:
            await hubble.wait_for_followers()
            publish(hubble, now, 40000, 20)
            assert await until_recorded(port, 20) == 20
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        await asyncio.sleep(0.2)
        publish(hubble, now + 1 * S, 41000, 30)  # published while nothing listens; kept in the server's history
        port = free_port()
        proc = start_daemon(hubble.target, store, port)
        try:
            assert await until_recorded(port, 50) == 50
            publish(hubble, now + 2 * S, 42000, 10)
            assert await until_recorded(port, 60) == 60
            await asyncio.sleep(1.5)  # a later flush must not add replayed flows
            assert await recorded_flows(port) == 60
            _, metrics = await _metrics(port)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert 'drop_explainer_source_resumes_total{source="hubble"}' in metrics
    assert any(line.startswith('drop_explainer_resume_duplicates_total{source="hubble"}') and
               float(line.split()[-1]) >= 1 for line in metrics.splitlines())


async def _metrics(port: int) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        return r.status, await r.text()
