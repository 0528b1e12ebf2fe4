#!/usr/bin/env bash
# Generate the Python modules for our Hubble protos (proto/) into the
# drop_explainer.hubble_pb package.
#
# Usage: scripts/gen_proto.sh [OUT_DIR]
#   OUT_DIR defaults to daemon/drop_explainer/hubble_pb (relative to the repo).
#   PYTHON selects the interpreter (default: .venv/bin/python if present,
#   else python3); it must have grpcio-tools installed.
#
# protoc names modules after the proto paths (flow/flow_pb2.py does
# "from flow import flow_pb2"), which only works with the output directory
# on sys.path. We generate into a scratch directory, flatten the tree into
# one package and rewrite those imports to absolute package imports, so the
# generated code is importable as drop_explainer.hubble_pb.<module>.
# The output is committed; tests/unit/sources/test_generated_protos.py
# regenerates into a temporary directory and fails if it differs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/daemon/drop_explainer/hubble_pb}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
package="drop_explainer.hubble_pb"
protos=(flow/flow.proto relay/relay.proto observer/observer.proto)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# The well-known types (timestamp, any, ...) ship inside grpc_tools.
wkt="$("$PYTHON" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

(cd "$repo/proto" && "$PYTHON" -m grpc_tools.protoc \
  -I . -I "$wkt" \
  --python_out="$scratch" --pyi_out="$scratch" --grpc_python_out="$scratch" \
  "${protos[@]}")

mkdir -p "$out"
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
for proto in "${protos[@]}"; do
  stem="${proto%.proto}"
  for suffix in _pb2.py _pb2.pyi _pb2_grpc.py; do
    src="$scratch/$stem$suffix"
    # Files without a service still get an empty *_pb2_grpc.py; skip those.
    if [[ "$suffix" == _pb2_grpc.py ]] && ! grep -q 'class .*Stub' "$src"; then continue; fi
    dst="$out/$(basename "$stem")$suffix"
    sed -E "s/^from (flow|relay|observer) import ([a-z_]+_pb2)/from ${package} import \2/" "$src" > "$dst"
  done
done

cat > "$out/__init__.py" <<'PY'
"""Python code generated from proto/ by scripts/gen_proto.sh; do not edit.

Cilium's Hubble `flow`, `relay` and `observer` protobuf packages, written by
us from the upstream field facts and wire-compatible with Cilium 1.14-1.19.
"""
PY
