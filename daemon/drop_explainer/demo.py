"""The whole daemon on the bundled incident, with nothing to install.

A real Hubble gRPC server (our test server, in this process, on loopback)
serves the incident's recorded drops, and the daemon reads them exactly as
it reads a node's Hubble socket; the cluster state comes from the bundled
files instead of an API server. The drops are replayed every few seconds
with fresh times, so rates and alerts have something to show. Beside the
incident's drops, the demo shows its DNS symptom: an egress policy of
backend that forgets DNS, and pod-b's dropped lookups of kube-dns (UDP 53),
from examples/incident-dns/ (synthetic, see its README).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

from drop_explainer import app
from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.hubble_pb import observer_pb2
from drop_explainer.pipeline import StaticState
from drop_explainer.settings import Settings
from drop_explainer.testing.hubble_server import FakeHubbleServer, load_responses

log = logging.getLogger(__name__)


def incident_dir() -> Path:
    return Path(str(resources.files("drop_explainer") / "examples" / "incident"))


def dns_dir() -> Path:
    """The DNS symptom of the incident (synthetic): an egress policy and its dropped lookups, demo only."""
    return Path(str(resources.files("drop_explainer") / "examples" / "incident-dns"))


def demo_state() -> ClusterState:
    """The incident's state with the DNS overlay's policy added."""
    overlay = dns_dir() / "egress-policy.yaml"
    return load_state(incident_dir()).with_objects(*parse_documents(str(overlay), overlay.read_text()))


def demo_flows() -> list[observer_pb2.GetFlowsResponse]:
    """The incident's recorded drops and the overlay's DNS drops, in time order."""
    both = load_responses(incident_dir() / "hubble-flows.jsonl") + load_responses(dns_dir() / "hubble-flows.jsonl")
    return sorted(both, key=lambda r: r.flow.time.ToNanoseconds())


def shifted(responses: list[observer_pb2.GetFlowsResponse], end_ns: int) -> list[observer_pb2.GetFlowsResponse]:
    """Copies whose times keep their spacing and end at ``end_ns``."""
    last = max(r.flow.time.ToNanoseconds() for r in responses)
    out = []
    for r in responses:
        copy = observer_pb2.GetFlowsResponse()
        copy.CopyFrom(r)
        t = end_ns - (last - r.flow.time.ToNanoseconds())
        copy.flow.time.FromNanoseconds(t)
        copy.time.FromNanoseconds(t)
        out.append(copy)
    return out


async def _replay(server: FakeHubbleServer, recorded: list[observer_pb2.GetFlowsResponse], every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        for response in shifted(recorded, time.time_ns()):
            server.push(response)


async def run(settings: Settings, *, replay_every_s: float = 10.0,
              on_started: Callable[[app.Daemon], None] | None = None) -> None:
    recorded = demo_flows()
    server = FakeHubbleServer(shifted(recorded, time.time_ns()), node_name="node-2", max_flows=100_000)
    await server.start()
    try:
        hubble = replace(settings.hubble, target=server.target, initial_number=len(recorded), tls=None)
        settings = replace(settings, hubble=hubble, source="hubble", events=False)
        state = StaticState(demo_state())

        def started(daemon: app.Daemon) -> None:
            log.info("demo_ready", extra={"try": f"curl http://{_host(settings.listen)}:{daemon.port}/pods/pod-b/drops"})
            if on_started is not None:
                on_started(daemon)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(app.serve(settings, state=state, on_started=started), name="daemon")
            if replay_every_s > 0:
                tg.create_task(_replay(server, recorded, replay_every_s), name="demo-replay")
    finally:
        await server.stop(grace=0)


def _host(listen: str) -> str:
    return "localhost" if listen in ("0.0.0.0", "::", "127.0.0.1") else listen
