"""The seed incident on a flannel-alone cluster: every answer leads with "not enforced".

The incident names it: "plain flannel will accept the policy and silently
ignore it". The same state saved with flannel's DaemonSet and node
annotations (as ``kubectl get ds,crd,nodes -A -o yaml`` writes them) must
not answer "denied": the connection flows. The engine's verdict is still
given, labelled as what the policies would do if something enforced them.
"""

from __future__ import annotations

import io
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from drop_explainer import cli

RECORDED = Path(__file__).parent / "cluster" / "recorded" / "enforcers"
NOTE = ("NetworkPolicy objects exist, but this cluster's network (flannel) does not enforce them: "
        "this connection is not blocked by policy.")
ASK = ["--from", "frontend/pod-a", "--to", "backend/pod-b", "--port", "8080"]


def _state_with(tmp_path: Path, recorded: str) -> Path:
    state = tmp_path / recorded
    state.mkdir()
    shutil.copy(cli.example_state_path() / "cluster.yaml", state / "cluster.yaml")
    items = yaml.safe_load((RECORDED / f"{recorded}.yaml").read_text(encoding="utf-8"))["items"]
    (state / "network.yaml").write_text(yaml.safe_dump({"kind": "List", "items": items}), encoding="utf-8")
    return state


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return cli.main(argv, out=out), out.getvalue()


def _validator() -> jsonschema.Draft202012Validator:
    def schema(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            (resources.files("drop_explainer") / "schemas" / name).read_text(encoding="utf-8"))
        return loaded
    explanation = schema("explanation.schema.json")
    registry: Registry[Any] = Registry().with_resource(explanation["$id"], Resource.from_contents(explanation))
    return jsonschema.Draft202012Validator(schema("whatif-result.schema.json"), registry=registry)


def test_whatif_text_leads_with_not_enforced_and_labels_the_would_be_verdict(tmp_path: Path) -> None:
    code, out = _run(["whatif", "--state", str(_state_with(tmp_path, "flannel-alone")), *ASK])
    first = out.splitlines()[0]
    assert first.startswith(f"NOT ENFORCED: {NOTE} If policy were enforced: DENIED")
    assert code == 0, "not blocked by policy: the exit code must not say denied"
    assert "backend/default-deny" in out, "the would-be verdict still names the policy"


def test_whatif_json_tells_the_truth_and_keeps_the_would_be_verdict(tmp_path: Path) -> None:
    code, out = _run(["whatif", "--state", str(_state_with(tmp_path, "flannel-alone")), *ASK, "-o", "json"])
    answer = json.loads(out)
    _validator().validate(answer)
    assert (answer["allowed"], answer["enforced"], answer["would_be_allowed"]) == (True, False, False)
    assert answer["not_enforced"] == NOTE
    assert answer["explanation"]["not_enforced"] == NOTE
    assert answer["explanation"]["notes"][0] == NOTE
    assert answer["ingress"]["allowed"] is False, "the per-side verdicts are the policies' would-be ones"
    assert code == 0


def test_batch_answers_are_labelled_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = tmp_path / "q.jsonl"
    batch.write_text(json.dumps({"from": "frontend/pod-a", "to": "backend/pod-b", "port": 8080}) + "\n",
                     encoding="utf-8")
    _, out = _run(["whatif", "--state", str(_state_with(tmp_path, "flannel-alone")), "--batch", str(batch)])
    answer = json.loads(out)
    _validator().validate(answer)
    assert (answer["allowed"], answer["enforced"], answer["would_be_allowed"]) == (True, False, False)


def test_with_kube_network_policies_in_flannel_the_answer_is_denied(tmp_path: Path) -> None:
    """The near miss: flannel with its kube-network-policies container does enforce."""
    code, out = _run(["whatif", "--state", str(_state_with(tmp_path, "flannel-kube-network-policies")), *ASK])
    assert out.startswith("DENIED")
    assert "NOT ENFORCED" not in out
    assert code == cli.EXIT_DENIED


def test_a_state_saved_without_workloads_says_nothing_about_enforcement() -> None:
    code, out = _run(["whatif", "--state", "example", *ASK])
    assert "NOT ENFORCED" not in out
    assert code == cli.EXIT_DENIED


def test_state_summary_names_the_enforcer(tmp_path: Path) -> None:
    code, out = _run(["state", "--state", str(_state_with(tmp_path, "flannel-alone"))])
    assert code == 0
    assert "policy enforcer: none: flannel does not enforce NetworkPolicy" in out
    assert "evidence: DaemonSet kube-flannel/kube-flannel-ds" in out
    _, out = _run(["state", "--state", str(_state_with(tmp_path, "antrea"))])
    assert "policy enforcer: antrea (profile antrea)" in out
