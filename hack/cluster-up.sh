#!/usr/bin/env bash
# Start the local test cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, MinIO and the
# node agent) in the background. Prints `export KUBECONFIG=…` and the S3 variables on stdout:
#   eval "$(hack/cluster-up.sh)"        # or: source ${MERGEVQ_CLUSTER_DIR:-/tmp/mergevq-cluster}/env.sh
# Builds the toolchain first if needed (progress on stderr). Stop with hack/cluster-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/toolchain.sh --check || hack/toolchain.sh >/dev/null
exec node --no-warnings --import tsx test/cluster/up.ts "$@"
