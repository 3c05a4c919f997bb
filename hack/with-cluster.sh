#!/usr/bin/env bash
# Run a command against the local cluster: reuse one that is already up (KUBECONFIG + MERGEVQ_S3_ENDPOINT set,
# e.g. from `make cluster-up`), else start one, run, and always stop it again (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KUBECONFIG:-}" ] && [ -n "${MERGEVQ_S3_ENDPOINT:-}" ]; then
  exec "$@"
fi
export MERGEVQ_CLUSTER_DIR="${MERGEVQ_CLUSTER_DIR:-$(mktemp -d /tmp/mergevq-test-cluster.XXXXXX)}"
cleanup() { hack/cluster-down.sh >&2 || true; }
trap cleanup EXIT INT TERM
hack/cluster-up.sh >&2
# shellcheck disable=SC1091
source "$MERGEVQ_CLUSTER_DIR/env.sh"
"$@"
