#!/usr/bin/env bash
# Build the real `hubble` CLI from its published Go module (github.com/cilium/hubble)
# for the tests that run it against our test Hubble server (`hubble status`).
# No prebuilt binary is downloaded: the module comes from the Go module proxy
# and is compiled here.
#
# Output: the directory holding `hubble` is printed as the LAST line of stdout.
# Progress goes to stderr. Exit status is non-zero (with a message naming the
# failed step) on any failure.
#
# Cached per version, so a second run returns at once:
#   ${DROP_EXPLAINER_HUBBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drop-explainer}/hubble-<version>/bin/
set -Eeuo pipefail  # -E: the ERR trap below also fires inside functions

# ---- pinned version: change it here and only here --------------------------
HUBBLE_VERSION="v1.19.3"  # Go module github.com/cilium/hubble (its root package is the CLI's main)
# ----------------------------------------------------------------------------

CACHE_ROOT="${DROP_EXPLAINER_HUBBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drop-explainer}"
VERSION_DIR="${CACHE_ROOT}/hubble-${HUBBLE_VERSION}"
BIN_DIR="${VERSION_DIR}/bin"

have_binary() {
    [[ -x "${BIN_DIR}/hubble" ]]
}

# Fast path: no Go invocation at all when the binary is cached.
if have_binary; then
    echo "${BIN_DIR}"
    exit 0
fi

log() { echo "build-hubble-cli: $*" >&2; }

STEP="start"
on_error() {
    local rc=$?
    [[ "${BASHPID}" == "$$" ]] || exit "${rc}"
    log "FAILED (exit ${rc}) during step: ${STEP}"
    log "cache dir: ${VERSION_DIR}"
    exit "${rc}"
}
trap on_error ERR

STEP="check prerequisites"
command -v go >/dev/null 2>&1 || { log "FAILED: 'go' not found in PATH (need Go >= 1.25)"; exit 1; }

mkdir -p "${VERSION_DIR}"

# Serialise concurrent builders (parallel test sessions, CI + developer).
STEP="acquire build lock"
exec 9>"${VERSION_DIR}/.build.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if have_binary; then  # someone else finished while we waited
    echo "${BIN_DIR}"
    exit 0
fi

# -trimpath keeps machine paths out of the binary; GOTOOLCHAIN=local never
# fetches another Go toolchain behind our back.
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED="${CGO_ENABLED:-0}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

SRC_DIR="${VERSION_DIR}/src"
STAGE_DIR="${VERSION_DIR}/stage"
mkdir -p "${SRC_DIR}" "${STAGE_DIR}"

STEP="download github.com/cilium/hubble@${HUBBLE_VERSION}"
dl_json="$(cd "${SRC_DIR}" && GOFLAGS= go mod download -json "github.com/cilium/hubble@${HUBBLE_VERSION}" 2>&1)" || {
    log "FAILED: go mod download github.com/cilium/hubble@${HUBBLE_VERSION}:"
    echo "${dl_json}" >&2
    exit 1
}
module_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"${dl_json}")"
[[ -n "${module_dir}" && -f "${module_dir}/main.go" ]] || { log "FAILED: could not locate github.com/cilium/hubble@${HUBBLE_VERSION}"; exit 1; }

# `go install github.com/cilium/hubble@version` refuses a module whose go.mod
# has replace directives (hubble's copies Cilium's), so the module is built as
# the main module instead: its own go.mod, go.sum and main.go, unchanged.
STEP="copy the module's go.mod, go.sum and main.go into ${SRC_DIR}"
for f in go.mod go.sum main.go; do
    install -m 0644 "${module_dir}/${f}" "${SRC_DIR}/${f}"
done

STEP="go build github.com/cilium/hubble ${HUBBLE_VERSION}"
log "compiling hubble ${HUBBLE_VERSION} (a few minutes on 2 cores)"
# The same version stamp as hubble's Makefile, so `hubble version` names it.
(cd "${SRC_DIR}" && go build -trimpath \
    -ldflags "-s -w -X 'github.com/cilium/cilium/hubble/pkg.Version=${HUBBLE_VERSION#v}'" \
    -o "${STAGE_DIR}/hubble" .) >&2

STEP="install the binary into ${BIN_DIR}"
mkdir -p "${BIN_DIR}"
# rename(2) within one filesystem: a reader never sees half a binary.
mv -f "${STAGE_DIR}/hubble" "${BIN_DIR}/hubble"
have_binary || { log "FAILED: hubble missing in ${BIN_DIR} after build"; exit 1; }
echo "${BIN_DIR}"
