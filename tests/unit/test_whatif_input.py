"""Friendlier what-if input: bare pod, node and Service names, named ports, notes on undeclared ports, --version.

A bare name is accepted only when it is unique; otherwise the CLI refuses and the API answers 409 with the
candidates. Every JSON answer still validates against the published schema.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from importlib import metadata, resources
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from referencing import Registry, Resource

from drop_explainer import cli
from drop_explainer.api import routes
from drop_explainer.api.peers import Peers
from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.policy.engine import Engine
from drop_explainer.settings import PeerSettings
from drop_explainer.sinks.store import DropStore

TWINS = """
- kind: Pod
  metadata: {name: pod-a, namespace: backend, labels: {app: twin}}
  spec: {nodeName: node-2, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.244.2.77, hostIP: 172.18.0.12}
"""


def _schema(name: str) -> dict[str, Any]:
    return json.loads((resources.files("drop_explainer") / "schemas" / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    explanation = _schema("explanation.schema.json")
    registry: Registry[Any] = Registry().with_resource(explanation["$id"], Resource.from_contents(explanation))
    return jsonschema.Draft202012Validator(_schema("whatif-result.schema.json"), registry=registry)


def _whatif(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = cli.main(["whatif", "--state", "example", *args, "-o", "json"], out=out)
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize(
    ("args", "ends", "port", "allowed"),
    [
        pytest.param(["--from", "pod-a", "--to", "pod-b", "--port", "8080"],
                     ["frontend/pod-a", "backend/pod-b"], 8080, False, id="bare-pod-names"),
        pytest.param(["--from", "pod-a", "--to", "pod-b", "--port", "http"],
                     ["frontend/pod-a", "backend/pod-b"], 8080, False, id="named-port-of-the-destination-pod"),
        pytest.param(["--from", "node-2", "--to", "pod-b", "--port", "http"],
                     ["node-2", "backend/pod-b"], 8080, True, id="node-name-own-node"),
        pytest.param(["--from", "node/node-1", "--to", "backend/pod-b", "--port", "8080"],
                     ["node-1", "backend/pod-b"], 8080, False, id="node-prefix-other-node"),
        pytest.param(["--from", "pod-a", "--to", "svc/backend/backend", "--port", "http"],
                     ["frontend/pod-a", "backend/pod-b"], 80, False, id="service-and-its-port-name"),
        pytest.param(["--from", "pod-a", "--to", "kube-dns", "--port", "53", "--protocol", "UDP"],
                     ["frontend/pod-a", "kube-system/coredns-5d78c9869d-x7k2p"], 53, True, id="bare-service-name"),
    ],
)
def test_names_are_resolved_where_they_are_unique(args: list[str], ends: list[str], port: int, allowed: bool,
                                                  validator: jsonschema.Draft202012Validator) -> None:
    """Pods, nodes and Services by name; named ports on the destination; the answer validates."""
    code, answer = _whatif(*args)
    validator.validate(answer)
    got = [e.get("namespace", "") + "/" + e["pod"] if "pod" in e else e["node"]
           for e in (answer["source"], answer["destination"])]
    assert got == ends
    assert (answer["port"], answer["allowed"], code) == (port, allowed, 0 if allowed else cli.EXIT_DENIED)
    assert answer["profile"]["name"] == "spec"


def test_the_demo_service_ip_answer_validates_and_says_k_of_n(validator: jsonschema.Draft202012Validator) -> None:
    """Reproduction through the CLI: the Service's cluster IP is judged at pod-b, and denied."""
    code, answer = _whatif("--from", "frontend/pod-a", "--to", "10.96.20.20", "--port", "80")
    validator.validate(answer)
    assert code == cli.EXIT_DENIED
    assert answer["allowed"] is False
    assert answer["service"]["allowed_backends"] == 0
    assert answer["service"]["total_backends"] == 1
    assert answer["to"] == "10.96.20.20"


def test_a_port_the_destination_does_not_declare_gets_a_note() -> None:
    """The verdict stands, and the answer says the pod declares other ports."""
    _, answer = _whatif("--from", "kube-system/coredns-5d78c9869d-x7k2p", "--to", "pod-b", "--port", "9999")
    assert any("pod backend/pod-b declares no container port 9999/TCP (it declares 8080/TCP (http))" in n
               for n in answer["explanation"]["notes"])
    _, declared = _whatif("--from", "kube-system/coredns-5d78c9869d-x7k2p", "--to", "pod-b", "--port", "8080")
    assert not any("declares no container port" in n for n in declared["explanation"]["notes"])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(["--port", "grpc"], "pod backend/pod-b defines no TCP port named 'grpc'; its named ports: "
                     "http=8080/TCP", id="unknown-port-name"),
        pytest.param(["--port", "443", "--to", "svc/backend/backend"], "has no TCP port 443; its ports: 80/TCP (http)",
                     id="unknown-service-port"),
        pytest.param(["--port", "80", "--to", "svc/backend/nope"], "no service backend/nope", id="unknown-service"),
        pytest.param(["--port", "80", "--to", "nobody"], "no pod, node or service named nobody", id="unknown-name"),
        pytest.param(["--port", "80", "--from", "svc/backend/backend"], "cannot be a source", id="service-as-source"),
    ],
)
def test_unresolvable_input_is_a_usage_error(args: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 and the reason on stderr."""
    base = ["whatif", "--state", "example", "--from", "pod-a", "--to", "pod-b"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*base, *args])
    assert exc.value.code == cli.EXIT_BAD_INPUT
    assert error in capsys.readouterr().err


def test_an_ambiguous_pod_name_lists_the_candidates(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """pod-a in two namespaces: the CLI refuses and names both."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "cluster.yaml").write_text((cli.example_state_path() / "cluster.yaml").read_text())
    (state / "twin.yaml").write_text("kind: List\nitems:" + TWINS)
    with pytest.raises(SystemExit):
        cli.main(["whatif", "--state", str(state), "--from", "pod-a", "--to", "pod-b", "--port", "80"])
    assert "pod/backend/pod-a, pod/frontend/pod-a" in capsys.readouterr().err


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    base = load_state(cli.example_state_path())
    engine = Engine(base.with_objects(*parse_documents("twin", "kind: List\nitems:" + TWINS)))
    peers = Peers(PeerSettings("single", {}, "drop-explainer", {}, 8080, 1.0), "node-2", lambda: engine.state)
    ctx = routes.Context(engine=lambda: engine, store=DropStore(":memory:"), peers=peers,
                         registry=CollectorRegistry(), ready=lambda: (True, "ok"), healthy=lambda: (True, "ok"))
    async with TestClient(TestServer(routes.make_app(ctx))) as c:
        yield c


async def test_the_api_answers_409_with_candidates(client: TestClient) -> None:  # type: ignore[type-arg]
    """GET /whatif?from=pod-a is ambiguous here: 409, and the candidates to choose from."""
    resp = await client.get("/whatif?from=pod-a&to=pod-b&port=8080&format=json")
    assert resp.status == 409
    body = await resp.json()
    assert body["candidates"] == ["pod/backend/pod-a", "pod/frontend/pod-a"]


async def test_the_api_resolves_unique_names_and_named_ports(client: TestClient) -> None:  # type: ignore[type-arg]
    """from a node name to a Service name with its port name."""
    resp = await client.get("/whatif?from=node-1&to=svc/backend/backend&port=http&format=json")
    assert resp.status == 200
    body = await resp.json()
    assert body["service"]["service"] == "backend/backend"
    assert body["port_name"] == "http"
    text = await (await client.get("/whatif?from=node-1&to=svc/backend/backend&port=http")).text()
    assert "CNI profile: spec" in text
    assert "is the address of node-2" not in text


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    """drop-explainer --version prints the package version and exits 0."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"drop-explainer {metadata.version('drop-explainer')}"


def test_state_names_the_profile_it_would_use() -> None:
    """drop-explainer state says which CNI profile answers would be judged by, and --cni changes it."""
    out = io.StringIO()
    assert cli.main(["state", "--state", "example"], out=out) == 0
    assert "CNI profile: spec, default for an offline what-if" in out.getvalue()
    out = io.StringIO()
    assert cli.main(["state", "--state", "example", "--cni", "calico"], out=out) == 0
    assert "CNI profile: calico, set by --cni" in out.getvalue()


@pytest.mark.parametrize(
    "cni", ["cilium,policy-enforcement-mode=always", "cilium,allow-localhost=policy", "aws-vpc-cni", "spec"])
@pytest.mark.parametrize("src", ["frontend/pod-a", "node-2", "node-1"])
def test_answers_under_every_profile_fit_the_schema(cni: str, src: str,
                                                   validator: jsonschema.Draft202012Validator) -> None:
    """Node-local verdicts and datapath isolation (enforcement mode always) are part of the published shape."""
    _, answer = _whatif("--cni", cni, "--from", src, "--to", "backend/pod-b", "--port", "8080")
    validator.validate(answer)
    assert answer["profile"]["name"] == cni.split(",", maxsplit=1)[0]
