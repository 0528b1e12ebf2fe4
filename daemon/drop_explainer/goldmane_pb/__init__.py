"""Python code generated from proto/goldmane/ by scripts/gen_goldmane_proto.sh; do not edit.

Calico's ``goldmane`` protobuf package (Flows.Stream/List,
FlowCollector.Connect and their messages), written by us from the upstream
field facts and wire-compatible with Calico 3.30-3.32.
"""
