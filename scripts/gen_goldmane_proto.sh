#!/usr/bin/env bash
# Generate the Python modules for our Goldmane proto (proto/goldmane/) into
# the drop_explainer.goldmane_pb package.
#
# Usage: scripts/gen_goldmane_proto.sh [OUT_DIR]
#   OUT_DIR defaults to daemon/drop_explainer/goldmane_pb (relative to the repo).
#   PYTHON selects the interpreter (default: .venv/bin/python if present,
#   else python3); it must have grpcio-tools installed.
#
# Kept apart from gen_proto.sh (the Hubble protos) so that each package is
# generated, committed and checked on its own. protoc names the grpc module's
# import after the proto path (from goldmane import goldmane_pb2); it is
# rewritten to the package import. The output is committed;
# tests/unit/sources/test_goldmane_protos.py regenerates into a temporary
# directory and fails if it differs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/daemon/drop_explainer/goldmane_pb}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
package="drop_explainer.goldmane_pb"
proto=goldmane/goldmane.proto

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

(cd "$repo/proto" && "$PYTHON" -m grpc_tools.protoc \
  -I . --python_out="$scratch" --pyi_out="$scratch" --grpc_python_out="$scratch" "$proto")

mkdir -p "$out"
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
for suffix in _pb2.py _pb2.pyi _pb2_grpc.py; do
  sed -E "s/^from goldmane import ([a-z_]+_pb2)/from ${package} import \1/" \
    "$scratch/goldmane/goldmane$suffix" > "$out/goldmane$suffix"
done

cat > "$out/__init__.py" <<'PY'
"""Python code generated from proto/goldmane/ by scripts/gen_goldmane_proto.sh; do not edit.

Calico's ``goldmane`` protobuf package (Flows.Stream/List,
FlowCollector.Connect and their messages), written by us from the upstream
field facts and wire-compatible with Calico 3.30-3.32.
"""
PY
