"""The probe port: answers from its own thread, a stalled loop said as such, bounded connections."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from drop_explainer import cli
from drop_explainer.api import probes
from drop_explainer.settings import SettingsError, from_args
from tests.daemon_support import run_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def serving(answers: probes.ProbeAnswers) -> Iterator[probes.ProbeServer]:
    server = probes.ProbeServer("127.0.0.1", 0, answers)
    server.start()
    try:
        yield server
    finally:
        server.close()


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_the_answers_are_the_loops_latest_until_the_loop_stalls() -> None:
    clock = Clock()
    answers = probes.ProbeAnswers(stall_after_s=30, clock=clock)
    assert answers.answer("/healthz") == probes._Answer(503, "unhealthy: starting\n")
    answers.update((True, "watches alive"), (False, "waiting for the first list of pods"))
    assert answers.answer("/healthz") == probes._Answer(200, "ok: watches alive\n")
    assert answers.answer("/readyz") == probes._Answer(503, "not ready: waiting for the first list of pods\n")
    clock.now += 29
    assert answers.answer("/healthz").status == 200  # type: ignore[union-attr]
    clock.now += 2
    stalled = answers.answer("/healthz")
    assert stalled is not None
    assert stalled.status == 503
    assert "event loop stalled: answers not refreshed for 31 s" in stalled.text
    answers.update((True, "watches alive"), (True, "all kinds synced"))
    assert answers.answer("/healthz").status == 200  # type: ignore[union-attr]
    assert answers.answer("/drops") is None


def test_the_server_answers_both_probes_and_refuses_other_paths() -> None:
    answers = probes.ProbeAnswers(stall_after_s=30)
    answers.update((False, "drop store d.db: the last 3 write(s) failed"), (True, "all kinds synced"))
    with serving(answers) as server:
        assert get(server.port, "/healthz") == (503, "unhealthy: drop store d.db: the last 3 write(s) failed\n")
        assert get(server.port, "/readyz?verbose=1") == (200, "ready: all kinds synced\n")
        assert get(server.port, "/readyz", "HEAD") == (200, "")
        status, body = get(server.port, "/pods/pod-b/drops")
    assert status == 404
    assert "serves /healthz and /readyz only" in body


def test_a_probe_behind_a_full_set_of_idle_connections_is_answered() -> None:
    """Slow clients holding every slot: the oldest is closed for the new connection, which is answered."""
    answers = probes.ProbeAnswers(stall_after_s=30)
    answers.update((True, "ok"), (True, "ok"))
    with serving(answers) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(probes.MAX_CONNECTIONS)]
        try:
            for _ in range(1000):  # bounded: the server thread accepts them in its own time
                if server._server.open_connections == probes.MAX_CONNECTIONS:
                    break
                time.sleep(0.01)
            assert server._server.open_connections == probes.MAX_CONNECTIONS
            assert get(server.port, "/healthz") == (200, "ok: ok\n")
            assert server._server.evicted >= 1
            assert idle[0].recv(100) == b"", "the oldest idle connection was not closed"
        finally:
            for s in idle:
                s.close()


def test_a_taken_probe_port_is_said_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(probes.ProbePortInUse, match=f"probe port {port} on 127.0.0.1 is already in use"):
            probes.ProbeServer("127.0.0.1", port, probes.ProbeAnswers(stall_after_s=30))


async def test_serve_refreshes_from_the_loop_and_closes_when_cancelled() -> None:
    calls: list[str] = []
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def healthy() -> tuple[bool, str]:
        calls.append("h")
        return True, f"refreshed {len(calls)} times"

    task = asyncio.create_task(probes.serve("127.0.0.1", 0, healthy, lambda: (True, "synced"), stall_after_s=30,
                                            on_bound=bound.set_result))
    port = await asyncio.wait_for(bound, 20)
    status, body = await asyncio.to_thread(get, port, "/healthz")
    assert status == 200
    assert body.startswith("ok: refreshed ")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


@pytest.mark.parametrize(("flags", "why"), [
    (("--probe-port", "70000"), "is not a port"),
    (("--port", "8080", "--probe-port", "8080"), "is the API's --port too"),
    (("--probe-stall-after", "nan"), "not a positive number"),
    (("--probe-stall-after", "0"), "not a positive number"),
])
def test_bad_probe_settings_are_refused(flags: tuple[str, ...], why: str) -> None:
    with pytest.raises(SettingsError, match=why):
        run_settings(*flags)


def test_the_probe_port_is_off_unless_asked() -> None:
    assert run_settings().probe_port == 0
    assert run_settings("--probe-port", "8081").probe_port == 8081
    assert from_args(cli.build_parser().parse_args(["run"]),
                     env={"DROP_EXPLAINER_PROBE_PORT": "9000"}).probe_port == 9000
