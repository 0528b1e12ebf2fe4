"""One structured log line per new signature in the daemon's own log (`kubectl logs`, log pipelines)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from drop_explainer import demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.flows.model import Flow
from drop_explainer.logs import JsonFormatter
from drop_explainer.pipeline import Pipeline, StaticState
from drop_explainer.sinks.store import DropStore
from drop_explainer.sources.flowfiles import parse_line

INCIDENT = demo.incident_dir()


def test_each_new_signature_is_one_json_log_line_with_what_a_page_needs(caplog: pytest.LogCaptureFixture) -> None:
    line = next(ln for ln in (INCIDENT / "hubble-flows.jsonl").read_text().splitlines() if '"10.244.1.10"' in ln)
    flow = parse_line(line)
    assert isinstance(flow, Flow)
    with DropStore(":memory:") as store:
        pipeline = Pipeline(StaticState(load_state(INCIDENT)), store=store)
        with caplog.at_level(logging.INFO, logger="drop_explainer.pipeline"):
            for port in (8080, 8080, 8081, 8080):
                pipeline.process(replace(flow, destination_port=port))
    records = [r for r in caplog.records if r.getMessage() == "new_signature"]
    assert len(records) == 2, "one per new signature, none for repeats"
    out = json.loads(JsonFormatter().format(records[0]))
    assert out["event"] == "new_signature"
    assert out["level"] == "info"
    assert out["workload"] == "backend/backend-7d4b9c"
    assert out["source"] == "frontend/pod-a"
    assert out["destination"] == "backend/backend-7d4b9c"
    assert (out["port"], out["protocol"], out["direction"]) == (8080, "TCP", "ingress")
    assert out["policy"] == ["backend/default-deny"]
    assert out["trap"] == []
    assert out["headline"].startswith("DENIED frontend/pod-a -> backend/pod-b TCP/8080")
    assert len(out["id"]) == 16
    assert json.loads(JsonFormatter().format(records[1]))["port"] == 8081
