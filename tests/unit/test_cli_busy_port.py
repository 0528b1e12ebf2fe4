"""A busy port, through the real CLI (a process): one line naming the port and --port, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drop_explainer import demo

DAEMON = Path(__file__).resolve().parents[2] / "daemon"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port someone else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drop_explainer.cli", *argv], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(DAEMON)}, check=False)


def test_the_demo_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    done = cli("demo", "--port", str(busy_port), "--replay-every", "0")
    assert done.returncode == 2
    assert done.stdout == "", "no banner inviting a curl to someone else's port"
    assert done.stderr.splitlines() == [
        f"drop-explainer: port {busy_port} on 127.0.0.1 is already in use (another drop-explainer, or another "
        "program); choose another with --port (make demo PORT=...)"]


def test_the_daemon_on_a_busy_port_ends_with_one_line_and_no_traceback(busy_port: int) -> None:
    """`run` meets the busy port inside its task groups (after the store and source are up)."""
    incident = demo.incident_dir()
    done = cli("run", "--listen", "127.0.0.1", "--port", str(busy_port), "--state", str(incident / "cluster.yaml"),
               "--source", "replay", "--replay-file", str(incident / "hubble-flows.jsonl"), "--store-path", ":memory:",
               "--events", "false", "--mode", "single", "--auth", "none", "--log-format", "json")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("{")]  # the rest are JSON log lines
    assert errors == [f"drop-explainer: port {busy_port} on 127.0.0.1 is already in use (another drop-explainer, "
                      "or another program); choose another with --port (make demo PORT=...)"]
