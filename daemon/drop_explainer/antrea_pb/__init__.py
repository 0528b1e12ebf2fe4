"""Python code generated from proto/antrea/ by scripts/gen_antrea_proto.sh; do not edit.

Antrea's ``antrea_io.antrea.pkg.apis.flow.v1alpha1`` package (the Flow
record and the Flow Aggregator's FlowStreamService.GetFlows), written by us
from the upstream field facts and wire-compatible with Antrea v2.7+.
"""
