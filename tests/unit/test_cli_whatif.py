"""The seed incident, asked through the command line as a user would.

backend has a default-deny ingress policy that admits only kube-system, so
frontend/pod-a cannot reach backend/pod-b:8080; adding a namespaceSelector
for frontend to that policy lets it through. Every JSON answer, single or
batch, must validate against the published what-if result schema.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from drop_explainer import cli

INCIDENT = ["whatif", "--state", "example", "--from", "frontend/pod-a", "--to", "backend/pod-b", "--port", "8080"]


def _schema(name: str) -> dict[str, Any]:
    text = (resources.files("drop_explainer") / "schemas" / name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """The published what-if schema; its explanation property refers to the explanation schema beside it."""
    explanation = _schema("explanation.schema.json")
    registry: Registry[Any] = Registry().with_resource(explanation["$id"], Resource.from_contents(explanation))
    return jsonschema.Draft202012Validator(_schema("whatif-result.schema.json"), registry=registry)


@pytest.fixture
def fixed_state(tmp_path: Path) -> Path:
    """The incident state with frontend added to backend/default-deny's only rule, split over two files."""
    listing = yaml.safe_load((cli.example_state_path() / "cluster.yaml").read_text(encoding="utf-8"))
    policies = [o for o in listing["items"] if o["kind"] == "NetworkPolicy"]
    (policy,) = policies
    policy["spec"]["ingress"][0]["from"].append(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}
    )
    listing["items"] = [o for o in listing["items"] if o["kind"] != "NetworkPolicy"]
    state = tmp_path / "state"
    state.mkdir()
    (state / "cluster.yaml").write_text(yaml.safe_dump(listing), encoding="utf-8")
    (state / "policies.json").write_text(json.dumps({"kind": "NetworkPolicyList", "items": policies}), encoding="utf-8")
    return state


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(argv, out=out)
    return code, out.getvalue()


def _policy_names(side: dict[str, Any], key: str) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in side[key]]


def test_incident_connection_is_denied_by_backend_default_deny(validator: jsonschema.Draft202012Validator) -> None:
    """pod-a -> pod-b:8080 is denied on ingress, and the JSON names backend/default-deny."""
    code, out = _run([*INCIDENT, "-o", "json"])
    answer = json.loads(out)
    validator.validate(answer)
    assert code == cli.EXIT_DENIED
    assert answer["allowed"] is False
    assert answer["ingress"]["isolated"] is True
    assert answer["ingress"]["allowed"] is False
    assert _policy_names(answer["ingress"], "policies") == ["backend/default-deny"]
    assert answer["ingress"]["policies"][0]["resourceVersion"] == "3001"
    assert answer["egress"] == {"allowed": True, "isolated": False, "policies": [], "allowed_by": []}
    assert (answer["source"]["kind"], answer["destination"]["ip"]) == ("pod", "10.244.2.20")


def test_incident_text_output_names_the_denying_policy() -> None:
    """The human form says DENIED and which policy isolates the destination."""
    code, out = _run(INCIDENT)
    assert code == cli.EXIT_DENIED
    assert out.startswith("DENIED frontend/pod-a -> backend/pod-b TCP/8080")
    assert "backend/default-deny" in out.splitlines()[0]


def test_adding_a_frontend_namespace_selector_allows_the_incident(
    fixed_state: Path, validator: jsonschema.Draft202012Validator
) -> None:
    """With the fix applied to a copy of the state, the same question is answered allowed by rule 0."""
    code, out = _run([*INCIDENT, "--state", str(fixed_state), "-o", "json"])
    answer = json.loads(out)
    validator.validate(answer)
    assert code == 0
    assert answer["allowed"] is True
    assert _policy_names(answer["ingress"], "allowed_by") == ["backend/default-deny"]
    assert answer["ingress"]["allowed_by"][0]["rule"] == 0


def test_incident_through_a_real_process(fixed_state: Path, validator: jsonschema.Draft202012Validator) -> None:
    """The installed module runs as a process: exit 1 when denied, 0 once fixed, JSON on stdout."""
    command = [sys.executable, "-m", "drop_explainer.cli", *INCIDENT, "-o", "json"]
    denied = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    fixed = subprocess.run([*command, "--state", str(fixed_state)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert (denied.returncode, fixed.returncode) == (1, 0), (denied.stderr, fixed.stderr)
    for result, allowed in ((denied, False), (fixed, True)):
        answer = json.loads(result.stdout)
        validator.validate(answer)
        assert answer["allowed"] is allowed


BATCH_LINES = [
    ('{"from": "frontend/pod-a", "to": "backend/pod-b", "port": 8080}', "denied"),
    ('{"from": "frontend/pod-a", "to": ', "error: not JSON"),
    ('{"from": "frontend/no-such-pod", "to": "backend/pod-b", "port": 8080}', "error: no pod frontend/no-such-pod"),
    ("", None),
    ('{"from": "kube-system/coredns-5d78c9869d-x7k2p", "to": "backend/pod-b", "port": 8080, "protocol": "tcp"}',
     "allowed"),
    # node-2 is pod-b's own node, exempt by networking/v1 (NetworkPolicySpec.Ingress); node-1 is not.
    ('{"from": "172.18.0.12", "to": "backend/pod-b", "port": "8080"}', "allowed"),
    ('{"from": "172.18.0.11", "to": "backend/pod-b", "port": "8080"}', "denied"),
    ('{"from": "frontend/pod-a", "to": "10.244.1.2", "port": 53, "protocol": "UDP"}', "allowed"),
    ('{"from": "frontend/pod-a", "to": "backend/pod-b", "port": 0}', "error: 'port' must be"),
    ('["frontend/pod-a", "backend/pod-b", 8080]', "error: expected a JSON object"),
    ('{"from": "frontend/pod-a", "to": "backend/pod-b", "port": 8080, "verbose": true}', "error: unknown field"),
    ('{"from": "frontend/pod-a", "to": "backend/pod-b", "port": 8080, "protocol": "ICMP"}', "error: 'protocol'"),
    ('{"from": "not-an-ip", "to": "backend/pod-b", "port": 8080}', "error: no pod, node or service named not-an-ip"),
    ('{"from": "203.0.113.5", "to": "backend/pod-b", "port": 8080}', "denied"),
]


def _check_batch(out: str, validator: jsonschema.Draft202012Validator) -> None:
    expected = [(number, what) for number, (_, what) in enumerate(BATCH_LINES, 1) if what is not None]
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(expected)
    for answer, (number, what) in zip(answers, expected, strict=True):
        validator.validate(answer)
        if what.startswith("error: "):
            assert answer["line"] == number
            assert what.removeprefix("error: ") in answer["error"]
        else:
            assert "error" not in answer, answer
            assert answer["allowed"] is (what == "allowed")


def test_batch_answers_every_line_in_order_and_goes_on_after_errors(
    tmp_path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    """One JSON line per non-blank input line; bad lines become {error, line} objects."""
    batch = tmp_path / "queries.jsonl"
    batch.write_text("\n".join(line for line, _ in BATCH_LINES) + "\n", encoding="utf-8")
    code, out = _run(["whatif", "--state", "example", "--batch", str(batch)])
    assert code == 0
    _check_batch(out, validator)


def test_batch_reads_standard_input(
    monkeypatch: pytest.MonkeyPatch, validator: jsonschema.Draft202012Validator
) -> None:
    """--batch - reads the questions from stdin."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(line for line, _ in BATCH_LINES)))
    code, out = _run(["whatif", "--state", "example", "--batch", "-"])
    assert code == 0
    _check_batch(out, validator)


def test_batch_with_explanations_still_fits_the_schema(
    monkeypatch: pytest.MonkeyPatch, validator: jsonschema.Draft202012Validator
) -> None:
    """--explain adds an explanation to each verdict line; error lines are unchanged."""
    lines = [BATCH_LINES[0][0], BATCH_LINES[1][0]]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines)))
    code, out = _run(["whatif", "--state", "example", "--batch", "-", "--explain"])
    verdict, error = (json.loads(line) for line in out.splitlines())
    assert code == 0
    validator.validate(verdict)
    validator.validate(error)
    assert "explanation" in verdict
    assert error["line"] == 2


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["whatif", "--state", "example", "--batch", "-", "--from", "frontend/pod-a"],
                     id="batch-with-from"),
        pytest.param(["whatif", "--state", "example", "--from", "frontend/pod-a", "--to", "backend/pod-b"],
                     id="missing-port"),
        pytest.param([*INCIDENT[:-1], "70000"], id="port-out-of-range"),
        pytest.param(["whatif", "--state", "example", "--from", "frontend/ghost", "--to", "backend/pod-b",
                      "--port", "80"],
                     id="unknown-pod"),
    ],
)
def test_bad_arguments_exit_with_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A single question that cannot be asked is a usage error, exit code 2."""
    with pytest.raises(SystemExit) as exited:
        _run(argv)
    assert exited.value.code == cli.EXIT_BAD_INPUT
    assert "usage: drop-explainer" in capsys.readouterr().err


def test_broken_state_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed state file is reported with file, object and field, and nothing is answered."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: NetworkPolicy\nmetadata: {name: x, namespace: backend}\n"
                   "spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n", encoding="utf-8")
    code, out = _run([*INCIDENT, "--state", str(bad)])
    assert (code, out) == (cli.EXIT_BAD_INPUT, "")
    err = capsys.readouterr().err
    assert f"{bad}: NetworkPolicy backend/x: field spec.ingress[0].ports[0].port" in err
