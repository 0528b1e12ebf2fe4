"""EndpointSlices from saved states: parsed with their readiness, targetRefs and ports; bad ones named."""

from __future__ import annotations

import pytest

from drop_explainer.cluster.errors import StateFileError
from drop_explainer.cluster.loading import parse_documents
from drop_explainer.cluster.state import ClusterState

SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-x1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {port: 9090}]
endpoints:
- {addresses: [10.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: api-1}, nodeName: n1}
- {addresses: [10.0.0.2], conditions: {ready: false}, targetRef: {kind: Pod, name: api-2, namespace: shop}}
- {addresses: [10.0.0.3]}
"""


def test_an_endpoint_slice_is_read_with_readiness_and_pods() -> None:
    """A missing ready condition means ready (discovery/v1); targetRef pods get the slice's namespace."""
    state = ClusterState.build(parse_documents("slice", SLICE))
    (sl,) = state.slices_by_service["shop/api"]
    assert [(e.addresses, e.ready, e.pod, e.node_name) for e in sl.endpoints] == [
        (("10.0.0.1",), True, "shop/api-1", "n1"), (("10.0.0.2",), False, "shop/api-2", None),
        (("10.0.0.3",), True, None, None)]
    assert sl.ports == (("http", 8080, "TCP"), (None, 9090, "TCP"))


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        pytest.param(SLICE.replace("[10.0.0.3]", "[not-an-ip]"), "endpoints[2].addresses[0]", id="bad-address"),
        pytest.param(SLICE.replace("port: 9090", "port: 90000"), "ports[1].port", id="bad-port"),
        pytest.param(SLICE.replace("ready: false", "ready: maybe"), "endpoints[1].conditions.ready", id="bad-ready"),
        pytest.param(SLICE.replace("protocol: TCP", "protocol: ICMP"), "ports[0].protocol", id="bad-protocol"),
    ],
)
def test_a_broken_endpoint_slice_is_refused_naming_the_field(bad: str, field: str) -> None:
    """Never half a state: the file, object and field are named."""
    with pytest.raises(StateFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_documents("slice", bad)
