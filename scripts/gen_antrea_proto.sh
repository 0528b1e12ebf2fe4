#!/usr/bin/env bash
# Generate the Python modules for our Antrea flow proto (proto/antrea/) into
# the drop_explainer.antrea_pb package.
#
# Usage: scripts/gen_antrea_proto.sh [OUT_DIR]
#   OUT_DIR defaults to daemon/drop_explainer/antrea_pb (relative to the repo).
#   PYTHON selects the interpreter (default: .venv/bin/python if present,
#   else python3); it must have grpcio-tools installed.
#
# As for the Hubble and Goldmane packages: protoc names the grpc module's
# import after the proto path (from antrea import flow_pb2); it is rewritten
# to the package import. The output is committed;
# tests/unit/sources/test_antrea_protos.py regenerates into a temporary
# directory and fails if it differs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/daemon/drop_explainer/antrea_pb}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
package="drop_explainer.antrea_pb"
proto=antrea/flow.proto

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

(cd "$repo/proto" && "$PYTHON" -m grpc_tools.protoc \
  -I . --python_out="$scratch" --pyi_out="$scratch" --grpc_python_out="$scratch" "$proto")

mkdir -p "$out"
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
for suffix in _pb2.py _pb2.pyi _pb2_grpc.py; do
  sed -E "s/^from antrea import ([a-z_]+_pb2)/from ${package} import \1/" \
    "$scratch/antrea/flow$suffix" > "$out/flow$suffix"
done

cat > "$out/__init__.py" <<'PY'
"""Python code generated from proto/antrea/ by scripts/gen_antrea_proto.sh; do not edit.

Antrea's ``antrea_io.antrea.pkg.apis.flow.v1alpha1`` package (the Flow
record and the Flow Aggregator's FlowStreamService.GetFlows), written by us
from the upstream field facts and wire-compatible with Antrea v2.7+.
"""
PY
