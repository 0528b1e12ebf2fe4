"""Killing a test run leaves no etcd or kube-apiserver behind, however it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.apiserver import build_binaries

pytestmark = pytest.mark.apiserver

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
from pathlib import Path
from tests.harness.apiserver import KubeApiServer
server = KubeApiServer(Path(sys.argv[1]))
server.start()
print("ready", flush=True)
time.sleep(600)
"""


def _children(pid: int) -> dict[int, str]:
    """pid -> command name of the processes whose parent is ``pid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid:
            out[int(entry.name)] = comm
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill-9", "term", "int"])
def test_no_etcd_or_apiserver_survives_the_test_process(sig: signal.Signals) -> None:
    """The harness's children die with the process that started them (PDEATHSIG, signal hooks)."""
    bin_dir = build_binaries()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(bin_dir)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        started = {pid: comm for pid, comm in _children(proc.pid).items() if comm in ("etcd", "kube-apiserver")}
        assert sorted(started.values()) == ["etcd", "kube-apiserver"]
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [started[p] for p in started if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
