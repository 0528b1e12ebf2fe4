"""Python code generated from proto/ by scripts/gen_proto.sh; do not edit.

Cilium's Hubble `flow`, `relay` and `observer` protobuf packages, written by
us from the upstream field facts and wire-compatible with Cilium 1.14-1.19.
"""
