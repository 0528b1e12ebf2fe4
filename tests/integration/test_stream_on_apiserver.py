"""/drops/stream under --auth kubernetes, decided by the real kube-apiserver (TokenReview, SubjectAccessReview).

The callers of test_auth_on_apiserver.py: a cluster reader and a team bound
only in namespace frontend. Both follow the stream; then the incident's two
drops arrive (frontend/pod-a -> backend/pod-b, and the kubelet's probe ->
backend/pod-b). The reader gets both in full; the team gets only the
cross-namespace one, backend's side withheld; a caller bound nowhere is
refused before the stream starts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from tests.harness.apiserver import KubeApiServer
from tests.integration.test_auth_on_apiserver import Callers, callers, daemon
from tests.integration.test_drop_stream import CROSS_IP, PROBE_IP, follow, incident_flows, next_event

pytestmark = pytest.mark.apiserver
__all__ = ["callers"]  # the module-scoped fixture, shared


async def test_a_team_follows_only_its_namespaces_and_the_other_side_is_withheld(
        kube_apiserver: KubeApiServer, callers: Callers, tmp_path: Path) -> None:
    """The reader sees both new signatures in full; the team only the cross-namespace one, redacted."""
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    async with daemon(kube_apiserver, empty) as d:
        port = d.port or 0
        for token, query in ((callers.team, "&namespace=backend"), (callers.nobody, "")):
            async with aiohttp.ClientSession() as s, s.get(
                    f"http://127.0.0.1:{port}/drops/stream?format=json{query}",
                    headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 403, await r.text()
        async with follow(port, "", callers.team) as (team, hello), follow(port, "", callers.reader) as (reader, all_):
            assert hello["filtered_to_namespaces"] == ["frontend"], "a filtered stream says so"
            assert "filtered_to_namespaces" not in all_
            d.pipeline.process(incident_flows(PROBE_IP)[0])
            d.pipeline.process(incident_flows(CROSS_IP)[0])
            got = [await next_event(reader), await next_event(reader)]
            assert [e["drop"]["signature"]["source_workload"] for e in got] == ["172.18.0.12", "frontend/pod-a"]
            assert all("withheld" not in e["drop"]["explanation"] for e in got)
            assert got[1]["drop"]["signature"]["policies"] == ["backend/default-deny"]

            mine = await next_event(team)
            assert mine["event"] == "new"
            assert mine["drop"]["signature"]["source_workload"] == "frontend/pod-a", "the probe drop is not theirs"
            assert mine["drop"]["signature"]["policies"] == [], "backend's policy is backend's business"
            assert mine["drop"]["explanation"]["withheld"]["namespaces"] == ["backend"]
            assert "default-deny" not in str(mine)
            assert "10.244.2.20" not in str(mine), "no backend address leaks"
            # Nothing else was for the team: the next new one is the next of frontend's.
            later = incident_flows(CROSS_IP)[0]
            d.pipeline.process(replace(incident_flows(PROBE_IP)[0], destination_port=9999))
            d.pipeline.process(replace(later, destination_port=8443))
            nxt = await next_event(team)
            assert (nxt["drop"]["signature"]["source_workload"], nxt["drop"]["signature"]["port"]) == \
                ("frontend/pod-a", 8443)
