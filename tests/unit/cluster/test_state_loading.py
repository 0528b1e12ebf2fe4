"""Reading saved cluster state: every shape kubectl writes, and errors that say where.

A broken object must be reported by file, object and field path, and must
stop the whole load: half a state would explain drops wrongly.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drop_explainer.cluster import loading
from drop_explainer.cluster.errors import StateFileError
from drop_explainer.cluster.loading import load_state, parse_documents
from drop_explainer.cluster.state import ClusterState

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "c"}]}, "status": {"podIP": "10.0.0.5"}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "deny", "namespace": "shop"}, "spec": {"podSelector": {}}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"clusterIP": "10.96.0.5", "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": "http"}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
              "spec": {"replicas": "not even valid"}}


def _typed_list(kind: str, *items: Mapping[str, object]) -> dict[str, object]:
    """What the API server returns: items without their own kind."""
    return {"apiVersion": "v1", "kind": f"{kind}List",
            "items": [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]}


def _yaml_docs(*objs: Mapping[str, object]) -> str:
    return "\n---\n".join(json.dumps(o) for o in objs)  # JSON is YAML, one document each


def _summary(state: ClusterState) -> dict[str, list[str]]:
    return {
        "namespaces": sorted(state.namespaces),
        "pods": sorted(state.pods),
        "nodes": sorted(state.nodes),
        "services": sorted(state.services),
        "policies": sorted(state.policies),
    }


EVERYTHING = {"namespaces": ["shop"], "pods": ["shop/web"], "nodes": ["n1"], "services": ["shop/web"],
              "policies": ["shop/deny"]}

SINGLE_POD_YAML = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.5}
"""

MULTI_DOC_YAML = """
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
# an empty document, as editors leave them
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec:
  podSelector: {}
...
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(SINGLE_POD_YAML, {"pods": ["shop/web"], "namespaces": ["shop"]}, id="single-object-yaml"),
        pytest.param(json.dumps(POD), {"pods": ["shop/web"], "namespaces": ["shop"]}, id="single-object-json"),
        pytest.param(MULTI_DOC_YAML, {"namespaces": ["shop"], "policies": ["shop/deny"]}, id="multi-document-yaml"),
        pytest.param(json.dumps({"apiVersion": "v1", "kind": "List",
                                 "items": [NAMESPACE, POD, NODE, SERVICE, POLICY, DEPLOYMENT]}),
                     EVERYTHING, id="kind-list-json"),
        pytest.param(_yaml_docs({"apiVersion": "v1", "kind": "List", "items": [NAMESPACE, POD, NODE, SERVICE, POLICY]}),
                     EVERYTHING, id="kind-list-yaml"),
        pytest.param(_yaml_docs(_typed_list("Pod", POD), _typed_list("NetworkPolicy", POLICY),
                                _typed_list("Namespace", NAMESPACE), _typed_list("Node", NODE),
                                _typed_list("Service", SERVICE)),
                     EVERYTHING, id="typed-lists-items-without-kind"),
        pytest.param(json.dumps([NAMESPACE, POD, NODE, SERVICE, POLICY]), EVERYTHING, id="json-array"),
        pytest.param(_yaml_docs({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "List", "items": [POD]}, POLICY]}),
                     {"pods": ["shop/web"], "policies": ["shop/deny"], "namespaces": ["shop"]},
                     id="nested-list"),
        pytest.param("{kind: Pod, apiVersion: v1, metadata: {name: web, namespace: shop}}",
                     {"pods": ["shop/web"], "namespaces": ["shop"]}, id="flow-style-yaml-starting-with-a-brace"),
        pytest.param(_yaml_docs(DEPLOYMENT, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
                                _typed_list("Event", {"metadata": {"name": "e"}}), POD),
                     {"pods": ["shop/web"], "namespaces": ["shop"]}, id="unknown-kinds-skipped"),
        pytest.param("", {}, id="empty-file"),
    ],
)
def test_loader_reads_every_shape_kubectl_writes(text: str, expected: dict[str, list[str]]) -> None:
    """Single objects, Lists, typed lists, multi-document YAML and JSON all load."""
    state = ClusterState.build(parse_documents("state.yaml", text))
    assert _summary(state) == {key: expected.get(key, []) for key in EVERYTHING}


def test_loader_reads_a_directory_of_files(tmp_path: Path) -> None:
    """Every .yaml, .yml and .json file below the directory is read; other files are not."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "namespaces.yaml").write_text(_yaml_docs(NAMESPACE))
    (tmp_path / "pods.json").write_text(json.dumps(_typed_list("Pod", POD)))
    (tmp_path / "sub" / "policies.yml").write_text(_yaml_docs(POLICY))
    (tmp_path / "sub" / "nodes.yaml").write_text(_yaml_docs(NODE, SERVICE))
    (tmp_path / "README.md").write_text("kind: Pod\nthis is not read")
    (tmp_path / "notes.txt").write_text("{broken")
    assert _summary(load_state(tmp_path)) == EVERYTHING


def test_loader_reads_a_single_file(tmp_path: Path) -> None:
    """A path to one file loads just that file."""
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"kind": "List", "apiVersion": "v1", "items": [NAMESPACE, POD]}))
    assert _summary(load_state(path))["pods"] == ["shop/web"]


def _policy(spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "x", "namespace": "backend"}, "spec": spec}


def _pod(spec: dict[str, object] | None = None, status: dict[str, object] | None = None,
         labels: dict[str, object] | None = None) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "labels": labels or {}},
            "spec": spec or {"containers": [{"name": "c"}]}, "status": status or {}}


PEER: dict[str, object] = {"podSelector": {}}


@pytest.mark.parametrize(
    ("obj", "name", "field", "reason"),
    [
        pytest.param(_policy({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}), "NetworkPolicy backend/x",
                     "spec.ingress[0].ports[0].port", "outside 1-65535", id="port-out-of-range"),
        pytest.param(_policy({"podSelector": {}, "ingress": [{"ports": [{"port": True}]}]}), "NetworkPolicy backend/x",
                     "spec.ingress[0].ports[0].port", "boolean", id="port-boolean"),
        pytest.param(_policy({"podSelector": {}, "egress": [{}, {"ports": [{"protocol": "ICMP"}]}]}),
                     "NetworkPolicy backend/x", "spec.egress[1].ports[0].protocol", "unknown protocol",
                     id="unknown-protocol"),
        pytest.param(_policy({"podSelector": {}, "ingress": [{"ports": [{"port": 9000, "endPort": 8000}]}]}),
                     "NetworkPolicy backend/x", "spec.ingress[0].ports[0].endPort", "below port", id="end-below-port"),
        pytest.param(_policy({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 8000}]}]}),
                     "NetworkPolicy backend/x", "spec.ingress[0].ports[0].endPort", "numeric port",
                     id="end-port-with-named-port"),
        pytest.param(_policy({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Sometimes"}]}}),
                     "NetworkPolicy backend/x", "spec.podSelector.matchExpressions[0].operator", "unknown value",
                     id="unknown-operator"),
        pytest.param(_policy({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
                     "NetworkPolicy backend/x", "spec.podSelector.matchExpressions[0].values", "non-empty",
                     id="in-without-values"),
        pytest.param(_policy({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                                                    "values": ["b"]}]}}),
                     "NetworkPolicy backend/x", "spec.podSelector.matchExpressions[0].values", "must be empty",
                     id="exists-with-values"),
        pytest.param(_policy({"podSelector": {"matchLabels": {"app": 3}}}), "NetworkPolicy backend/x",
                     "spec.podSelector.matchLabels.app", "expected a string", id="label-value-not-a-string"),
        pytest.param(_policy({"podSelector": {}, "ingress": [{"from": [PEER, {"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
                     "NetworkPolicy backend/x", "spec.ingress[0].from[1].ipBlock.cidr", "not a CIDR", id="bad-cidr"),
        pytest.param(_policy({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "nope"]}}]}]}),
                     "NetworkPolicy backend/x", "spec.ingress[0].from[0].ipBlock.except[1]", "not a CIDR",
                     id="bad-except"),
        pytest.param(_policy({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, **PEER}]}]}),
                     "NetworkPolicy backend/x", "spec.egress[0].to[0]", "cannot be combined",
                     id="ip-block-with-selector"),
        pytest.param(_policy({"podSelector": {}, "ingress": [{"from": [PEER, {}]}]}), "NetworkPolicy backend/x",
                     "spec.ingress[0].from[1]", "needs podSelector", id="empty-peer"),
        pytest.param(_policy({"podSelector": {}, "ingress": {"from": []}}), "NetworkPolicy backend/x",
                     "spec.ingress", "expected a list", id="rules-not-a-list"),
        pytest.param(_policy({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]}), "NetworkPolicy backend/x",
                     "spec.policyTypes[1]", "unknown policy type", id="unknown-policy-type"),
        pytest.param(_policy({"ingress": [{}]}), "NetworkPolicy backend/x", "spec.podSelector", "is required",
                     id="missing-pod-selector"),
        pytest.param(_pod(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.300"}]}), "Pod shop/web",
                     "status.podIPs[1].ip", "not an IP address", id="bad-pod-ip"),
        pytest.param(_pod(status={"podIP": "banana"}), "Pod shop/web", "status.podIP", "not an IP address",
                     id="bad-single-pod-ip"),
        pytest.param(_pod(spec={"containers": [{"name": "c", "ports": [{"containerPort": "http"}]}]}), "Pod shop/web",
                     "spec.containers[0].ports[0].containerPort", "port number", id="named-container-port"),
        pytest.param(_pod(spec={"containers": [{"name": "c", "ports": [{"name": "http"}]}]}), "Pod shop/web",
                     "spec.containers[0].ports[0].containerPort", "is required", id="missing-container-port"),
        pytest.param(_pod(spec={"hostNetwork": "yes", "containers": []}), "Pod shop/web", "spec.hostNetwork",
                     "true or false", id="host-network-not-a-boolean"),
        pytest.param(_pod(labels={"version": 2}), "Pod shop/web", "metadata.labels.version", "expected a string",
                     id="pod-label-not-a-string"),
        pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {}}}, "Namespace ?",
                     "metadata.name", "is required", id="namespace-without-name"),
        pytest.param({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDRs": ["x"]}},
                     "Node n1", "spec.podCIDRs[0]", "not a CIDR", id="bad-node-pod-cidr"),
        pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"},
                      "spec": {"ports": [{"targetPort": 80}]}}, "Service a/s", "spec.ports[0].port", "is required",
                     id="service-port-missing"),
        pytest.param({"apiVersion": "v1", "kind": "Pod", "metadata": "web"}, "Pod ?", "metadata", "expected an object",
                     id="metadata-not-an-object"),
    ],
)
def test_malformed_object_error_names_file_object_and_field(
    obj: dict[str, object], name: str, field: str, reason: str
) -> None:
    """The message reads "<file>: <Kind ns/name>: field <path>: <reason>"."""
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [NAMESPACE, obj]})
    with pytest.raises(StateFileError) as caught:
        parse_documents("state/cluster.json", text)
    err = caught.value
    assert (err.path, err.obj, err.field) == ("state/cluster.json", name, field)
    assert reason in err.reason
    assert str(err).startswith(f"state/cluster.json: {name}: field {field}: ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("kind: Pod\nmetadata: {name: [unclosed\n", "not valid YAML or JSON", id="broken-yaml"),
        pytest.param('{"kind": "Pod", "metadata": ', "not valid YAML or JSON", id="broken-json"),
        pytest.param("just a sentence", "expected Kubernetes objects, found a str", id="scalar-document"),
        pytest.param("- 1\n- 2\n", "expected Kubernetes objects, found a int", id="list-of-scalars"),
        pytest.param('{"kind": "List", "items": {"a": 1}}', "items of a List must be a list", id="items-not-a-list"),
    ],
)
def test_malformed_file_error_names_the_file(text: str, reason: str) -> None:
    """Unparseable text or non-objects are reported against the file."""
    with pytest.raises(StateFileError, match=reason) as caught:
        parse_documents("state/bad.yaml", text)
    assert caught.value.path == "state/bad.yaml"
    assert str(caught.value).startswith("state/bad.yaml: ")


def test_broken_file_among_good_ones_loads_nothing(tmp_path: Path) -> None:
    """One bad file fails the whole load, naming that file, object and field."""
    (tmp_path / "a-good.yaml").write_text(_yaml_docs(NAMESPACE, POD))
    bad = _policy({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]})
    (tmp_path / "b-bad.yaml").write_text(_yaml_docs(bad))
    (tmp_path / "c-good.yaml").write_text(_yaml_docs(POLICY))
    with pytest.raises(StateFileError) as caught:
        load_state(tmp_path)
    assert caught.value.path == str(tmp_path / "b-bad.yaml")
    assert "NetworkPolicy backend/x: field spec.ingress[0].ports[0].port" in str(caught.value)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda p: p / "missing", "no such file or directory", id="missing-path"),
        pytest.param(lambda p: p, "no .yaml, .yml or .json files", id="empty-directory"),
    ],
)
def test_unusable_path_is_a_state_file_error(tmp_path: Path, make: object, reason: str) -> None:
    """A path with nothing to read is an error, not an empty cluster."""
    assert callable(make)
    with pytest.raises(StateFileError, match=reason):
        load_state(make(tmp_path))


YAML_CORNERS = {
    "yaml-1.1-scalars": "a: yes\nb: off\nc: ~\nd: null\ne: 0x1F\nf: 017\ng: 1_000\nh: 1.5e3\ni: .inf\nj: 2026-11-26\n"
                        "k: 2026-11-26T01:58:56Z\nl: '8080'\nm: \"true\"\nn: 190:20:30\no: ''\np:\n",
    "anchors-and-aliases": "base: &b {app: web}\ncopy: *b\nlist: [*b, *b]\n",
    "merge-keys": "base: &b {app: web, tier: x}\npod: {<<: *b, tier: y}\n",
    "explicit-tags": "a: !!str 123\nb: !!int '7'\nc: !!float '1'\nd: !!binary aGk=\ne: !!set {x, y}\n",
    "non-specific-tag": "a: ! 123\nb: ! yes\n",
    "complex-key": "? [a, b]\n: 1\n",
    "value-key": "=: 1\n",
    "null-and-number-keys": "~: a\n1: b\n1.5: c\ntrue: d\n",
    "multi-document": "---\na: 1\n---\n---\n- x\n- {y: [1, {z: null}]}\n...\n",
    "flow-and-block-mixed": "items:\n- {kind: Pod, metadata: {name: web}}\n- kind: Pod\n  metadata:\n    name: db\n",
    "block-scalars": "a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n",
    "duplicate-keys": "a: 1\na: 2\n",
    "scalar-documents": "--- 1\n--- hello\n--- [1, 2]\n",
    "empty": "",
}


@pytest.mark.parametrize("text", [pytest.param(t, id=k) for k, t in YAML_CORNERS.items()])
def test_yaml_is_read_exactly_as_pyyaml_reads_it(text: str) -> None:
    """The fast event-based reader (and its fallback) gives PyYAML's safe_load_all result, corner cases included."""
    assert _read(loading._documents, text) == _read(lambda t: list(yaml.safe_load_all(t)), text)


def _read(reader: Callable[[str], list[object]], text: str) -> object:
    try:
        return reader(text)
    except yaml.YAMLError as exc:
        return type(exc)  # e.g. an unhashable key: both must refuse it


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False),
    st.sampled_from(["yes", "No", "on", "~", "null", "1.0", "0x10", "017", "<<", "=", "2026-01-02", "8080", "", " a "]),
    st.text(max_size=8),
)
_trees = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_trees, min_size=1, max_size=3), st.sampled_from([None, True, False]))
def test_yaml_reader_round_trips_whatever_pyyaml_writes(docs: list[object], flow: bool | None) -> None:
    """Anything PyYAML dumps reads back as PyYAML itself would read it."""
    text = yaml.safe_dump_all(docs, default_flow_style=flow)
    assert _read(loading._documents, text) == _read(lambda t: list(yaml.safe_load_all(t)), text)


def test_loading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    """The collector is paused while loading, and back on afterwards, even when the load fails."""
    (tmp_path / "good.yaml").write_text(_yaml_docs(NAMESPACE, POD))
    load_state(tmp_path)
    assert gc.isenabled()
    (tmp_path / "bad.yaml").write_text("kind: Pod\nmetadata: [\n")
    with pytest.raises(StateFileError):
        load_state(tmp_path)
    assert gc.isenabled()
