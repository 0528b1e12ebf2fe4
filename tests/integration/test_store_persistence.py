"""The drop store after kill -9: every signature reported new, and every flushed count, is on disk.

The test runs this same file as a child process (``python <this file> <db>
<count>``): the child records signatures and repeats, prints each id right
after record() said it was new and each total right after a flush, and is
killed with SIGKILL mid-stream. Whatever it printed must be in the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.explain.model import Explanation
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks.base import DropSignature, ExplainedDrop
from drop_explainer.sinks.store import DropStore

T0 = 1_764_122_280_000_000_000
FIRST_NEW = 200
MORE_NEW = 30
"""New signatures the child must report after "ready" before it is killed."""
STATE = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: web, labels: {kubernetes.io/metadata.name: web}}}
- {kind: Namespace, metadata: {name: api, labels: {kubernetes.io/metadata.name: api}}}
- kind: NetworkPolicy
  metadata: {name: default-deny, namespace: api, resourceVersion: "7"}
  spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def _pod(ns: str, name: str, ip: str) -> Endpoint:
    return Endpoint(EndpointKind.POD, ip, ns, name)


def _explanation() -> Explanation:
    engine = Engine(ClusterState.build(parse_documents("state", STATE)))
    return explain_flow(engine, Flow(T0, Verdict.DROPPED, _pod("web", "a", "10.0.1.1"), _pod("api", "b", "10.0.2.1"),
                                     destination_port=8080, drop_kind=DropKind.POLICY_DENIED,
                                     direction=Direction.INGRESS))


def _drop(expl: Explanation, n: int, at: int) -> ExplainedDrop:
    """Signature number n: one of 100 destination pods, its own port."""
    dst = _pod("api", f"pod-{n % 100}", f"10.0.2.{n % 100}")
    flow = Flow(T0 + at, Verdict.DROPPED, _pod("web", "a", "10.0.1.1"), dst, destination_port=n + 1,
                node="n1", drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS)
    sig = DropSignature("web/a", f"api/pod-{n % 100}", n + 1, "TCP", "ingress", ("api/default-deny",), ())
    return ExplainedDrop(flow, expl, sig)


def _child(path: str, count: int) -> None:
    """Record `count` new signatures, say "ready", then repeats with a new signature now and then, forever."""
    expl = _explanation()
    store = DropStore(path)
    recorded = 0
    for n in range(count):
        if not store.record(_drop(expl, n, recorded)):
            raise SystemExit(f"signature {n} was not new")
        recorded += 1
        print("new", _drop(expl, n, 0).signature.id, flush=True)
    print("ready", flush=True)
    n = count
    while True:
        for i in range(500):
            store.record(_drop(expl, i % count, recorded))
            recorded += 1
        store.flush()
        print("flushed", recorded, flush=True)
        drop = _drop(expl, n, recorded)
        if store.record(drop):
            print("new", drop.signature.id, flush=True)
        recorded += 1
        n += 1


def _run_and_kill(path: Path) -> list[str]:
    """Lines the child printed up to (and including what was in the pipe at) its SIGKILL."""
    lines: list[str] = []
    with subprocess.Popen([sys.executable, __file__, str(path), str(FIRST_NEW)], stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line.strip())
                if "ready" in lines and sum(w.startswith("new") for w in lines) >= FIRST_NEW + MORE_NEW:
                    break
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            lines += [w.strip() for w in proc.stdout.read().splitlines()]
    assert proc.returncode == -signal.SIGKILL
    return lines


def test_every_signature_reported_new_is_on_disk_after_kill_9(tmp_path: Path) -> None:
    """No id printed after record() said new, and no count printed after flush(), is lost to SIGKILL."""
    path = tmp_path / "drops.db"
    lines = _run_and_kill(path)
    assert "ready" in lines
    reported = [w.split()[1] for w in lines if w.startswith("new ")]
    flushed = [int(w.split()[1]) for w in lines if w.startswith("flushed ")]
    assert len(reported) >= FIRST_NEW + MORE_NEW
    with DropStore(path) as store:
        stored = store.query(limit=100_000)
    assert set(reported) <= {r.id for r in stored}
    assert sum(r.flows for r in stored) >= flushed[-1]


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
