#!/usr/bin/env bash
# Builds the Go peer of `make bench BENCH=operator-peer`: the Kubeflow training-operator (PyTorchJob controller)
# at a pinned release, from the Go module proxy, into a cache folder outside the repo. Its go.mod has no
# replace directives, so `go install module/cmd@version` builds it as released. The PyTorchJob CRD of the same
# release is copied next to the binary. Prints the peer folder on stdout (last line); progress on stderr.
#
#   hack/peer/build.sh          build when missing, print the folder
#   hack/peer/build.sh --dir    print the folder only
set -euo pipefail

PEER_MODULE="github.com/kubeflow/training-operator"
PEER_VERSION="${PEER_VERSION:-v1.8.1}"
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
DIR="$CACHE_ROOT/peer/training-operator-$PEER_VERSION"

log() { printf '[peer %5ss] %s\n' "$SECONDS" "$*" >&2; }

[ "${1:-}" = "--dir" ] && { echo "$DIR"; exit 0; }
if [ -x "$DIR/training-operator" ] && [ -f "$DIR/kubeflow.org_pytorchjobs.yaml" ]; then
  log "training-operator $PEER_VERSION present"
  echo "$DIR"
  exit 0
fi
command -v go >/dev/null || { echo "peer: 'go' (>= 1.22) is required on PATH" >&2; exit 1; }
mkdir -p "$DIR"
log "training-operator $PEER_VERSION: go install from the module proxy (cold: k8s 0.29 client libraries, a few minutes)"
GOBIN="$DIR/.gobin" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
  go install -ldflags='-s -w' "$PEER_MODULE/cmd/training-operator.v1@$PEER_VERSION"
mv "$DIR/.gobin/training-operator.v1" "$DIR/training-operator"
rmdir "$DIR/.gobin"
src="$(go mod download -json "$PEER_MODULE@$PEER_VERSION" | sed -n 's/.*"Dir": "\([^"]*\)".*/\1/p')"
cp "$src/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" "$DIR/"
log "built $DIR/training-operator"
echo "$DIR"
