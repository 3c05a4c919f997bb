#!/usr/bin/env bash
# Builds the pinned control-plane toolchain (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, helm, MinIO) from the Go module proxy into a cache folder OUTSIDE the repo, keyed by
# version. Skips whatever is already built. Prints the bin dir on stdout (last line); progress on stderr.
#
#   hack/toolchain.sh            build what is missing, print bin dir
#   hack/toolchain.sh --bin-dir  print bin dir only (no build)
#   hack/toolchain.sh --check    exit 0 when every binary is present at its pinned version
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.18.4}"
# MinIO publishes no semver tags; pin the proxy's pseudo-version for reproducibility.
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"

CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
TC="$CACHE_ROOT/toolchain/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
BIN="$TC/bin"
# Control plane for the process-based local cluster; the node binaries feed the kind node image (hack/kind/).
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
K8S_NODE_CMDS="kubelet kubeadm kube-proxy"
MINOR="${K8S_VERSION#v1.}"; MINOR="${MINOR%%.*}"
V0="v0.${K8S_VERSION#v1.}"

log() { printf '[toolchain %5ss] %s\n' "$SECONDS" "$*" >&2; }

have_k8s() { [ -x "$BIN/kube-apiserver" ] && "$BIN/kube-apiserver" --version 2>/dev/null | grep -q "Kubernetes $K8S_VERSION" \
  && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/kubectl" ]; }
have_k8s_node() { [ -x "$BIN/kubelet" ] && "$BIN/kubelet" --version 2>/dev/null | grep -q "Kubernetes $K8S_VERSION" \
  && [ -x "$BIN/kubeadm" ] && [ -x "$BIN/kube-proxy" ]; }
have_etcd() { [ -x "$BIN/etcd" ] && "$BIN/etcd" --version 2>/dev/null | grep -q "etcd Version: ${ETCD_VERSION#v}"; }
have_helm() { [ -x "$BIN/helm" ]; }
have_minio() { [ -x "$BIN/minio" ] && [ -f "$BIN/.minio-$MINIO_VERSION" ]; }

case "${1:-}" in
  --bin-dir) echo "$BIN"; exit 0 ;;
  --check) have_k8s && have_etcd && have_helm && have_minio; exit $? ;;
  --check-node) have_k8s_node; exit $? ;;
esac

command -v go >/dev/null || { echo "toolchain: 'go' (>= 1.26) is required on PATH" >&2; exit 1; }
command -v openssl >/dev/null || { echo "toolchain: 'openssl' is required on PATH" >&2; exit 1; }
mkdir -p "$BIN"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0

k8s_module() {
  local mod="$TC/k8sbins"; mkdir -p "$mod"; cd "$mod"
  if [ ! -f go.sum ] || ! grep -q 'cmd/kubelet' go.mod; then
    log "kubernetes $K8S_VERSION: writing wrapper module (replace list read from upstream go.mod)"
    rm -f go.mod go.sum; go mod init local/k8sbins >/dev/null 2>&1; go mod edit -go=1.26.0
    local gm; gm=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\([^"]*\)".*/\1/p')
    for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gm"); do
      go mod edit -replace="$m=$m@$V0"
    done
    go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
    for c in $K8S_CMDS $K8S_NODE_CMDS; do go mod edit -tool="k8s.io/kubernetes/cmd/$c"; done
    log "kubernetes: go mod tidy (downloads ~1 GB on a cold module cache)"
    go mod tidy
  fi
}

k8s_ldflags() {
  local ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
    ldf="$ldf -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldf"
}

build_k8s() {
  have_k8s && { log "kubernetes $K8S_VERSION present"; return; }
  k8s_module
  log "kubernetes: building $K8S_CMDS (15-25 min cold)"
  # shellcheck disable=SC2086
  go build -trimpath -ldflags "$(k8s_ldflags)" -o "$BIN/" $(printf 'k8s.io/kubernetes/cmd/%s ' $K8S_CMDS)
  log "kubernetes: $("$BIN/kube-apiserver" --version)"
}

# kubelet, kubeadm and kube-proxy for the kind node image (same version and build cache as the control plane).
build_k8s_node() {
  have_k8s_node && { log "kubernetes node binaries $K8S_VERSION present"; return; }
  k8s_module
  log "kubernetes: building $K8S_NODE_CMDS (5-10 min after the control plane)"
  # shellcheck disable=SC2086
  go build -trimpath -tags=selinux,notest -ldflags "$(k8s_ldflags)" -o "$BIN/" $(printf 'k8s.io/kubernetes/cmd/%s ' $K8S_NODE_CMDS)
  log "kubernetes: $("$BIN/kubelet" --version)"
}

build_etcd() {
  have_etcd && { log "etcd $ETCD_VERSION present"; return; }
  local mod="$TC/etcdbin"; mkdir -p "$mod"; cd "$mod"
  if [ ! -f go.sum ]; then
    rm -f go.mod; go mod init local/etcdbin >/dev/null 2>&1; go mod edit -go=1.26.0
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -tool=go.etcd.io/etcd/server/v3
    go mod tidy
  fi
  log "etcd: building $ETCD_VERSION"
  go build -trimpath -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_helm() {
  have_helm && { log "helm present"; return; }
  log "helm: go install $HELM_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_minio() {
  have_minio && { log "minio present"; return; }
  log "minio: go install $MINIO_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  touch "$BIN/.minio-$MINIO_VERSION"
}

only="${1:-all}"
case "$only" in
  all) build_etcd; build_helm; build_minio; build_k8s ;;
  k8s) build_k8s ;; k8s-node) build_k8s_node ;; etcd) build_etcd ;; helm) build_helm ;; minio) build_minio ;;
  *) echo "usage: $0 [all|k8s|k8s-node|etcd|helm|minio|--bin-dir|--check|--check-node]" >&2; exit 2 ;;
esac
log "done"
echo "$BIN"
