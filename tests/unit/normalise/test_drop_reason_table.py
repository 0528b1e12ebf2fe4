"""The table of drop reasons newer than our proto stays current against the proto itself."""

from __future__ import annotations

from drop_explainer.hubble_pb import flow_pb2
from drop_explainer.normalise import hubble

PROTO = {v.number: v.name for v in flow_pb2.DropReason.DESCRIPTOR.values}


def test_no_entry_of_the_newer_table_is_already_in_our_proto() -> None:
    """When our flow.proto catches up with Cilium, the stale table entry must go (the proto's name wins)."""
    assert not set(hubble.NEWER_DROP_REASONS) & set(PROTO)
    names = {name for name, _ in hubble.NEWER_DROP_REASONS.values() if name}
    assert not names & set(PROTO.values())


def test_the_newer_table_continues_where_our_proto_ends() -> None:
    """Every code the table names is above the proto's newest drop reason (205, DROP_PUNT_PROXY, in Cilium 1.19)."""
    assert max(PROTO) == 205
    assert min(hubble.NEWER_DROP_REASONS) > max(PROTO)


def test_every_proto_drop_reason_renders_as_its_enum_name() -> None:
    """The proto's own names are used verbatim (hubble_drop_total uses the same names)."""
    for number, name in PROTO.items():
        if number >= 130:
            assert hubble.drop_reason_name(number) == name


def test_a_code_named_nowhere_is_said_plainly_not_as_a_bare_number() -> None:
    """An operator reads "unknown drop reason 250", never "250"."""
    assert hubble.drop_reason_name(250) == "unknown drop reason 250"
