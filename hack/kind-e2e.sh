#!/usr/bin/env bash
# Hosts with Docker: create a kind cluster, build and load the images, install MinIO and the chart, then run
# the SAME e2e suite the local control plane runs (suites read only KUBECONFIG and the S3 env variables).
# Cannot run on machines without a Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "kind-e2e: needs a running Docker engine" >&2; exit 1; }
command -v kind >/dev/null || go install sigs.k8s.io/kind@v0.30.0
KIND="$(command -v kind || echo "$(go env GOPATH)/bin/kind")"
BIN="$(hack/toolchain.sh --bin-dir)"; hack/toolchain.sh helm >/dev/null; hack/toolchain.sh k8s >/dev/null
NAME="${KIND_CLUSTER:-mergevq-e2e}"
TAG="e2e"
export KUBECONFIG="$(mktemp -d)/kubeconfig"
cleanup() { [ -n "${KEEP_CLUSTER:-}" ] || "$KIND" delete cluster --name "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$KIND" create cluster --name "$NAME" --kubeconfig "$KUBECONFIG" --wait 120s
make images IMAGE_TAG="$TAG"
for img in operator trainer; do "$KIND" load docker-image --name "$NAME" "ghcr.io/mergevq-k8s/$img:$TAG"; done
"$BIN/kubectl" apply -f hack/kind/minio.yaml
"$BIN/kubectl" -n mergevq-system rollout status deploy/minio --timeout=180s
"$BIN/kubectl" -n mergevq-system port-forward svc/minio 19000:9000 >/dev/null 2>&1 &
PF=$!; trap 'kill $PF 2>/dev/null || true; cleanup' EXIT
"$BIN/helm" install mergevq charts/mergevq-operator -n mergevq-system --create-namespace \
  --set image.tag="$TAG" --set trainer.image="ghcr.io/mergevq-k8s/trainer:$TAG" \
  --set s3.endpoint=http://minio.mergevq-system.svc:9000 --wait
export MERGEVQ_S3_ENDPOINT=http://127.0.0.1:19000 AWS_ACCESS_KEY_ID=mergevq AWS_SECRET_ACCESS_KEY=mergevq-e2e-secret AWS_REGION=us-east-1
export MERGEVQ_E2E_OPERATOR=installed MERGEVQ_E2E_S3_ENDPOINT_IN_CLUSTER=http://minio.mergevq-system.svc:9000
node --import tsx --test --test-reporter=spec --test-concurrency=1 $(find test/e2e -name '*.test.ts' | sort)
