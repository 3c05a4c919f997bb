#!/usr/bin/env bash
# The real-kubelet tier: a multi-node kind cluster (1 control plane + 2 workers) on a node image assembled here
# (hack/kind/node-image.sh), the project's images built here (hack/images/build.sh) and loaded into the nodes,
# MinIO in the cluster, the chart installed with Helm by the suites, and then
#   test/e2e      the same e2e suite the local control plane runs (tokenizer → AR → SamplingJob by reference)
#   test/kind     what only containers on a real kubelet can show (resilience, signals, images, GPU profile)
# Works on a fresh machine: starts a Docker engine when none answers (installing Debian's docker.io as root).
# Everything expensive is cached under ~/.cache/mergevq. Env: KIND_CLUSTER (name), KEEP_CLUSTER=1 (leave it up),
# KIND_SUITES ("e2e kind" by default), KIND_TEST_PATTERN (run only the tests whose names match this regex),
# KIND_GPU_IMAGE=0 (skip the ~4.4 GB trainer-gpu image), BENCH_OUT (append kind bench JSON lines there),
# KIND_LOW_DISK=1 (a throwaway machine, as in CI: free each thing once the run no longer needs it — the Go build
# and module caches after the node image, the GPU wheels and staged libraries after trainer-gpu, the engine's
# copies of the images once they are in the nodes). Free disk is logged at each stage either way.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
t0=$SECONDS
say() { printf '[kind-e2e %5ss] %s\n' "$((SECONDS - t0))" "$*" >&2; }
LOW_DISK="${KIND_LOW_DISK:-0}"
bench() { [ -z "${BENCH_OUT:-}" ] || printf '{"bench":"kind","metric":"%s","value":%s,"unit":"%s","config":"%s"}\n' "$1" "$2" "$3" "${4:-3 nodes}" >>"$BENCH_OUT"; }
NAME="${KIND_CLUSTER:-mergevq-e2e}"
TAG=e2e
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
KIND_VERSION="${KIND_VERSION:-v0.32.0}"

export DOCKER; DOCKER="$(hack/images/docker-engine.sh)"
DOCKER_ROOT="$("$DOCKER" info -f '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)"
disk() { # free space where the engine and the cache write, logged at each stage (a full disk fails far from its cause)
  say "disk free: $(df -Ph "$DOCKER_ROOT" "$CACHE_ROOT" 2>/dev/null | awk 'NR > 1 && !seen[$1]++ {print $4 " on " $6}' | paste -sd, -) ($*)"
}
disk start
make -s setup >/dev/null
BIN="$(hack/toolchain.sh --bin-dir)"
export PATH="$BIN:$PATH" KUBECTL="$BIN/kubectl"

# kind, built from the Go module proxy; a `docker` shim adds the runtime wrapper on VMs that need it.
KIND_BIN="$CACHE_ROOT/kind/bin"
export KIND="$KIND_BIN/kind-$KIND_VERSION"
if [ ! -x "$KIND" ]; then
  say "go install sigs.k8s.io/kind@$KIND_VERSION"
  mkdir -p "$KIND_BIN/.gobin"
  GOBIN="$KIND_BIN/.gobin" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kind@$KIND_VERSION"
  mv "$KIND_BIN/.gobin/kind" "$KIND"
fi
SHIM="$CACHE_ROOT/kind/shim"; mkdir -p "$SHIM"
if "$DOCKER" info --format '{{json .Runtimes}}' | grep -q mergevq-runc; then
  printf '#!/bin/sh\n# kind runs nodes --privileged; route them through the capability-fixing runtime (hack/kind/runc-wrapper.sh)\nif [ "$1" = run ]; then shift; exec %s run --runtime=mergevq-runc "$@"; fi\nexec %s "$@"\n' "$DOCKER" "$DOCKER" >"$SHIM/docker"
else
  printf '#!/bin/sh\nexec %s "$@"\n' "$DOCKER" >"$SHIM/docker"
fi
chmod +x "$SHIM/docker"
kind() { PATH="$SHIM:$PATH" "$KIND" "$@"; }

s=$SECONDS; NODE_IMAGE="$(hack/kind/node-image.sh)"; bench node_image_seconds $((SECONDS - s)) s "$NODE_IMAGE"
say "node image $NODE_IMAGE"
if [ "$LOW_DISK" = 1 ]; then
  # Nothing below compiles Kubernetes again; kind itself is installed. The engine holds the node image.
  go clean -cache -modcache
  rm -f "$CACHE_ROOT"/kind/node-*.tar
  disk "KIND_LOW_DISK: Go build + module caches and the node image tarball dropped"
fi
s=$SECONDS
IMAGE_REGISTRY=mergevq IMAGE_TAG=$TAG BENCH_OUT="${BENCH_OUT:-}" hack/images/build.sh operator trainer >/dev/null
d="$(mktemp -d)"; cp "$BIN/minio" "$d/"; printf 'FROM scratch\nCOPY minio /usr/local/bin/minio\nENTRYPOINT ["/usr/local/bin/minio"]\n' >"$d/Dockerfile"
"$DOCKER" build -q -t mergevq/minio:$TAG "$d" >/dev/null; rm -rf "$d"
bench images_seconds $((SECONDS - s)) s "operator trainer minio"
GPU_IMAGES=()
if [ "${KIND_GPU_IMAGE:-1}" != 0 ]; then
  s=$SECONDS
  IMAGE_REGISTRY=mergevq IMAGE_TAG=$TAG hack/images/build.sh trainer-gpu >/dev/null
  bench images_seconds $((SECONDS - s)) s "trainer-gpu"
  GPU_IMAGES=(trainer-gpu)
  if [ "$LOW_DISK" = 1 ]; then # the image holds them now
    rm -rf "$CACHE_ROOT"/tfjs-node/*-gpu "$CACHE_ROOT"/wheels/tensorflow-[0-9]*.whl "$CACHE_ROOT"/wheels/nvidia_*.whl
    disk "KIND_LOW_DISK: GPU wheels and the tfjs-node-gpu build dropped"
  fi
fi
# (image sizes and build times: written by hack/images/build.sh itself when BENCH_OUT is set)
disk "images built"
# `kind load docker-image` saves the image to a temporary tarball first, one more full copy on disk (4.4 GB for
# trainer-gpu); this streams `docker save` into each node's containerd instead, as kind's own import does.
# KIND_LOW_DISK: once the nodes hold an image, the engine's copy is only disk (nothing below runs it on the host).
load_image() { # image node…
  local img="$1" node; shift
  for node in "$@"; do
    say "loading $img into $node"
    "$DOCKER" save "$img" | "$DOCKER" exec -i "$node" \
      ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs - >/dev/null
  done
  [ "$LOW_DISK" != 1 ] || "$DOCKER" image rm "$img" >/dev/null
}

export KUBECONFIG="$CACHE_ROOT/kind/$NAME.kubeconfig"
PF=""
cleanup() {
  [ -z "$PF" ] || kill "$PF" 2>/dev/null || true
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$NAME" >/dev/null 2>&1 || true; else say "cluster kept: export KUBECONFIG=$KUBECONFIG"; fi
}
trap cleanup EXIT
kind delete cluster --name "$NAME" >/dev/null 2>&1 || true
s=$SECONDS
say "kind create cluster $NAME (1 control plane + 2 workers)"
kind create cluster --name "$NAME" --image "$NODE_IMAGE" --config hack/kind/cluster.yaml --kubeconfig "$KUBECONFIG" --retain >&2
hack/kind/cni.sh "$NAME"
kubectl wait --for=condition=Ready nodes --all --timeout=180s >&2
kubectl -n kube-system rollout status deploy/coredns --timeout=180s >&2
bench cluster_create_seconds $((SECONDS - s)) s
kubectl get nodes -o wide >&2
s=$SECONDS
mapfile -t workers < <(kind get nodes --name "$NAME" | grep -v control-plane)
for img in operator trainer minio; do load_image "mergevq/$img:$TAG" "${workers[@]}"; done
bench image_load_seconds $((SECONDS - s)) s "operator trainer minio → 2 workers"
say "images loaded into ${workers[*]}"
if [ ${#GPU_IMAGES[@]} -gt 0 ]; then
  # Only the worker that will advertise nvidia.com/gpu (hack/kind/cluster.yaml: pool=gpu) gets the GPU image.
  s=$SECONDS
  gpu_node="$(kubectl get nodes -l mergevq.ai/pool=gpu -o jsonpath='{.items[0].metadata.name}')"
  disk "before loading trainer-gpu"
  # The node stores the image twice (content blobs + unpacked snapshot): say so plainly rather than fail inside ctr.
  need_kb=$(($("$DOCKER" image inspect -f '{{.Size}}' "mergevq/trainer-gpu:$TAG") / 1024 * 2 + 1048576))
  free_kb=$(df -Pk "$DOCKER_ROOT" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt "$need_kb" ]; then
    echo "kind-e2e: loading mergevq/trainer-gpu:$TAG into $gpu_node needs ~$((need_kb / 1048576)) GB free under $DOCKER_ROOT, $((free_kb / 1048576)) GB are (free disk, set KIND_LOW_DISK=1 on a throwaway machine, or KIND_GPU_IMAGE=0 to run the GPU profile on the CPU image)" >&2
    exit 1
  fi
  load_image "mergevq/trainer-gpu:$TAG" "$gpu_node"
  bench image_load_seconds $((SECONDS - s)) s "trainer-gpu → $gpu_node"
  export MERGEVQ_KIND_GPU_IMAGE="mergevq/trainer-gpu:$TAG"
  say "trainer-gpu loaded into $gpu_node"
fi

disk "images loaded"
kubectl apply -f hack/kind/minio.yaml >&2
kubectl -n mergevq-system rollout status deploy/minio --timeout=180s >&2
kubectl -n mergevq-system port-forward svc/minio 19000:9000 >/dev/null 2>&1 &
PF=$!
for _ in $(seq 1 30); do curl -fsS http://127.0.0.1:19000/minio/health/ready >/dev/null 2>&1 && break; sleep 1; done

# The suites read the cluster from KUBECONFIG and S3 from these (host side through the port-forward; pods use
# the in-cluster Service), and install the chart with the locally built images.
export MERGEVQ_S3_ENDPOINT=http://127.0.0.1:19000 AWS_ACCESS_KEY_ID=mergevq AWS_SECRET_ACCESS_KEY=mergevq-e2e-secret AWS_REGION=us-east-1
export MERGEVQ_S3_ENDPOINT_IN_CLUSTER=http://minio.mergevq-system.svc:9000
export MERGEVQ_HELM_SET="image.repository=mergevq/operator,image.tag=$TAG,trainer.image=mergevq/trainer:$TAG"
export MERGEVQ_KIND_CLUSTER="$NAME"
NODE_TEST=(node --import tsx --test --test-reporter=spec --test-concurrency=1)
[ -z "${KIND_TEST_PATTERN:-}" ] || NODE_TEST+=(--test-name-pattern "$KIND_TEST_PATTERN")
for suite in ${KIND_SUITES:-e2e kind}; do
  s=$SECONDS
  say "suite test/$suite on kind"
  "${NODE_TEST[@]}" $(find "test/$suite" -name '*.test.ts' | sort)
  bench "suite_${suite}_seconds" $((SECONDS - s)) s
done
bench kind_e2e_seconds $((SECONDS - t0)) s
say "kind-e2e passed in $((SECONDS - t0)) s"
