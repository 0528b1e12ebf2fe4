"""The incident stories, each a state, a connection or flows, and what the explanation must say.

Every story goes through the real CLI in both output forms, and its fix is
applied to the state by the test and re-checked by the engine: the fix we
print must be one that works.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from drop_explainer import cli
from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine

STORIES = Path(__file__).resolve().parents[1] / "fixtures" / "stories"
NAMES = sorted(p.name for p in STORIES.iterdir() if p.is_dir() and not p.name.startswith("_"))
SCHEMA = json.loads((Path(cli.__file__).parent / "schemas" / "explanation.schema.json").read_text())


def _case(name: str) -> dict[str, Any]:
    data = yaml.safe_load((STORIES / name / "case.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def state_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The base objects plus the story's own, as one state directory."""
    name = request.param
    out = tmp_path / "state"
    out.mkdir()
    shutil.copy(STORIES / "_base" / "cluster.yaml", out / "base.yaml")
    shutil.copy(STORIES / name / "policies.yaml", out / "policies.yaml")
    return out


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def _apply_fixes(state: ClusterState, fixes: list[dict[str, Any]]) -> ClusterState:
    """Apply the JSON fixes the way a program would: objects as documents, labels merged."""
    for fix in fixes:
        objs = parse_documents("fix", json.dumps({"kind": "List", "items": fix.get("objects", [])}))
        state = state.with_objects(*objs)
        for item in fix.get("namespace_labels", []):
            state = state.with_namespace_labels(item["namespace"], item["labels"])
    return state


def _check(expl: dict[str, Any], expect: dict[str, Any], text: str, state: ClusterState, query: queries.Query) -> None:
    jsonschema.validate(expl, SCHEMA)
    assert expl["allowed"] is expect["allowed"]
    denying = [[t["direction"], f"{t['namespace']}/{t['name']}"] for t in expl["denying"]]
    assert denying == expect["denying"]
    if "closest" in expect:
        c = expl["closest"]
        assert [c["direction"], f"{c['namespace']}/{c['name']}", c["rule"]] == expect["closest"]
    if "closest_clauses" in expect:
        closest = next(r for t in expl["denying"] for r in t["rules"] if r["closest"])
        assert [f["clause"] for f in closest["failures"]] == expect["closest_clauses"]
    assert [t["id"] for t in expl["traps"]] == expect["traps"]
    assert [f["kind"] for f in expl["fixes"]][:1] == ([expect["fix"]] if expect["fix"] else [])
    for fragment in expect.get("text", []):
        assert fragment in text
    for fragment in expect.get("fix_yaml", []):
        assert any(fragment in f["apply"] for f in expl["fixes"])
    assert all(f["verified"] for f in expl["fixes"])
    fixed = Engine(_apply_fixes(state, expl["fixes"]))
    assert fixed.evaluate(queries.connection(fixed.state, query)).allowed, "the suggested fix must allow it"


CONNECTION_STORIES = [n for n in NAMES if "connection" in _case(n)]
FLOW_STORIES = [n for n in NAMES if "flows" in _case(n)]


@pytest.mark.parametrize(("state_dir", "name"), [(n, n) for n in CONNECTION_STORIES],
                         indirect=["state_dir"], ids=CONNECTION_STORIES)
def test_story_connection_is_explained_in_text_and_json(state_dir: Path, name: str) -> None:
    """whatif explains the story's connection; the printed fix makes it allowed."""
    case = _case(name)
    c = case["connection"]
    args = ["whatif", "--state", str(state_dir), "--from", c["from"], "--to", c["to"], "--port", str(c["port"]),
            "--protocol", c["protocol"]]
    code, text = _run(*args)
    assert code == (0 if case["expect"]["allowed"] else cli.EXIT_DENIED)
    _, raw = _run(*args, "-o", "json")
    answer = json.loads(raw)
    state = load_state(state_dir)
    _check(answer["explanation"], case["expect"], text, state, queries.Query(c["from"], c["to"], c["port"],
                                                                              c["protocol"]))


@pytest.mark.parametrize(("state_dir", "name"), [(n, n) for n in FLOW_STORIES],
                         indirect=["state_dir"], ids=FLOW_STORIES)
def test_story_flows_are_grouped_and_explained(state_dir: Path, name: str) -> None:
    """explain --flows groups identical drops and explains each group; fixes are verified."""
    case = _case(name)
    flows = str(STORIES / name / case["flows"])
    code, text = _run("explain", "--state", str(state_dir), "--flows", flows)
    assert code == 0
    _, raw = _run("explain", "--state", str(state_dir), "--flows", flows, "-o", "json")
    lines = [json.loads(line) for line in raw.splitlines()]
    groups = [g for g in lines if "fixes_for_all" not in g]
    merged = [g["fixes_for_all"] for g in lines if "fixes_for_all" in g]
    assert len(groups) == len(case["expect_groups"])
    state = load_state(state_dir)
    queries_of = []
    for group, expect in zip(groups, case["expect_groups"], strict=True):
        sig = group["signature"]
        assert [sig["source_workload"], sig["destination"], sig["port"], sig["protocol"], sig["direction"]] == \
            expect["signature"]
        assert group["flows"] == expect["flows"]
        conn = group["explanation"]["connection"]
        ends = [(e.get("namespace", "") + "/" + e["pod"]) if "pod" in e else e["ip"]
                for e in (conn["source"], conn["destination"])]
        query = queries.Query(ends[0], ends[1], conn["port"], conn["protocol"])
        _check(group["explanation"], expect, text, state, query)
        queries_of.append(query)
    for fixes in merged:  # the one change per object for all groups: every group's connection allowed by it
        assert "apply this one change" in text or "apply these" in text
        fixed = Engine(_apply_fixes(state, fixes))
        assert all(fixed.evaluate(queries.connection(fixed.state, q)).allowed for q in queries_of)
