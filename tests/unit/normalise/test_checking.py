"""normalise.checking: hostile values refused by reason, oversized ones cut and counted, future times clamped."""

from __future__ import annotations

import pytest

from drop_explainer.flows import model
from drop_explainer.normalise import checking

S = 1_000_000_000
NOW = 1_764_800_000 * S


def flow(**changes: object) -> model.Flow:
    values: dict[str, object] = {
        "time_ns": NOW - S, "verdict": model.Verdict.DROPPED,
        "source": model.Endpoint(model.EndpointKind.POD, "10.0.0.1", "default", "a", {"app": "a"}),
        "destination": model.Endpoint(model.EndpointKind.POD, "10.0.0.2", "default", "b", {"app": "b"}),
        "source_port": 40000, "destination_port": 80,
    }
    values.update(changes)
    return model.Flow(**values)  # type: ignore[arg-type]


def check(f: model.Flow) -> checking.Check:
    return checking.check(f, now_ns=lambda: NOW)


def with_ip(ip: str) -> model.Flow:
    return flow(source=model.Endpoint(model.EndpointKind.POD, ip, "default", "a"))


@pytest.mark.parametrize("ip", [
    pytest.param("not-an-ip", id="word"),
    pytest.param("999.999.1.1", id="octets-out-of-range"),
    pytest.param("1.2.3.4/24", id="prefix"),
    pytest.param("10.0.0.1%eth0", id="ipv4-zone"),
    pytest.param("fe80::1%eth0", id="ipv6-zone"),
    pytest.param("", id="empty"),
    pytest.param(" 10.0.0.1", id="padded"),
    pytest.param("1" * 10_000, id="huge"),
])
def test_an_ip_that_is_not_a_bare_address_is_refused_as_bad_ip(ip: str) -> None:
    """The four addresses of the issue and their relatives: InvalidFlow(bad-ip), never an exception elsewhere."""
    with pytest.raises(checking.InvalidFlow) as info:
        check(with_ip(ip))
    assert info.value.reason == checking.BAD_IP


@pytest.mark.parametrize("ip", ["10.0.0.1", "::1", "2001:db8::5", "::ffff:10.0.0.1"])
def test_bare_ipv4_and_ipv6_addresses_pass_unchanged(ip: str) -> None:
    """Valid addresses are not touched (the same Flow object comes back)."""
    f = with_ip(ip)
    assert check(f).flow is f


@pytest.mark.parametrize(("field", "port"), [
    ("source_port", 0), ("source_port", 65536), ("destination_port", -1), ("destination_port", 2**40),
])
def test_a_port_outside_1_to_65535_is_refused(field: str, port: int) -> None:
    """Ports are 1-65535 (None = no port, for ICMP)."""
    with pytest.raises(checking.InvalidFlow) as info:
        check(flow(**{field: port}))
    assert info.value.reason == checking.BAD_PORT


@pytest.mark.parametrize("t", [0, -1, 2**63, 2**64 + 5])
def test_a_time_outside_int64_nanoseconds_is_refused(t: int) -> None:
    """Past 2262 or before 1970 cannot be stored in SQLite's int64: refused before the store sees it."""
    with pytest.raises(checking.InvalidFlow) as info:
        check(flow(time_ns=t))
    assert info.value.reason == checking.BAD_TIME


def test_a_time_far_ahead_of_the_local_clock_is_clamped_to_now_and_flagged() -> None:
    """One flow stamped a year ahead must not move the resume point into the future."""
    result = check(flow(time_ns=NOW + 365 * 86400 * S))
    assert result.clamped
    assert result.flow.time_ns == NOW


def test_a_time_a_little_ahead_is_clock_skew_and_kept() -> None:
    """Within max_future_ns (5 min) of now, a node's clock skew is left alone."""
    result = check(flow(time_ns=NOW + 60 * S))
    assert not result.clamped
    assert result.flow.time_ns == NOW + 60 * S


def test_ten_thousand_labels_are_capped_and_flagged_as_truncated() -> None:
    """An endpoint keeps at most max_labels labels (sorted by key), so a flow's memory is bounded."""
    labels = {f"k{i:05}": "v" for i in range(10_000)}
    result = check(flow(source=model.Endpoint(model.EndpointKind.POD, "10.0.0.1", "default", "a", labels)))
    assert result.truncated
    assert len(result.flow.source.labels) == checking.DEFAULT_LIMITS.max_labels
    assert min(result.flow.source.labels) == "k00000"


def test_a_megabyte_string_is_cut_with_a_marker() -> None:
    """Names, label values, reasons and policy names over max_string end in the marker."""
    big = "x" * 1_000_000
    result = check(flow(
        source=model.Endpoint(model.EndpointKind.POD, "10.0.0.1", "default", big, {"app": big}),
        drop_reason=big, attribution=(model.PolicyHit(name=big, namespace="default"),),
        destination_names=(big,),
    ))
    limit = checking.DEFAULT_LIMITS.max_string
    f = result.flow
    assert result.truncated
    for value in (f.source.pod, f.source.labels["app"], f.drop_reason, f.attribution[0].name,
                  f.destination_names[0]):
        assert value is not None
        assert len(value) == limit
        assert value.endswith(checking.MARKER)


def test_negative_counts_are_refused() -> None:
    """An aggregate cannot stand for fewer than zero packets."""
    with pytest.raises(checking.InvalidFlow) as info:
        check(flow(packets=-1))
    assert info.value.reason == checking.BAD_COUNT
