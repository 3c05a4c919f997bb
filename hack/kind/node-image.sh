#!/usr/bin/env bash
# Assemble a kind node image with no registry, i.e. do by hand what `kind build node-image` does (it would pull
# a base image and the add-on images). Everything comes from package registries:
#   - root filesystem: Debian bookworm (debootstrap) with systemd, Debian's containerd 1.6 + runc, CNI plugins,
#     iptables/nftables/conntrack, plus kind's own images/base/files (entrypoint, containerd config, units)
#     read from the sigs.k8s.io/kind module;
#   - kubelet, kubeadm, kubectl and the control-plane / kube-proxy images: the same Kubernetes build as the local
#     control plane (hack/toolchain.sh), one Go build cache for both;
#   - etcd (toolchain), CoreDNS (go build), pause (gcc -static of the kubernetes module's pause.c), imported into
#     the node's containerd under the exact tags kubeadm asks for, pinned.
# No kindnetd: the cluster runs with disableDefaultCNI and hack/kind/cni.sh wires the reference CNI plugins.
# Cached: the image in the engine and a `docker save` tarball under ~/.cache/mergevq/kind/, keyed by versions and
# by the hash of this script. Prints the image tag on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
KIND_VERSION="${KIND_VERSION:-v0.32.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.2}" # kubeadm 1.36's CoreDNSVersion
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
BIN="$("$REPO/hack/toolchain.sh" --bin-dir)"
K8S_VERSION="$(sed -n 's/^K8S_VERSION="${K8S_VERSION:-\(v[0-9.]*\)}"/\1/p' "$REPO/hack/toolchain.sh")"
K8S_VERSION="${K8S_VERSION_OVERRIDE:-$K8S_VERSION}"
key="$(cat "$0" "$HERE/runc-wrapper.sh" | sha256sum | cut -c1-10)"
TAG="mergevq/kind-node:$K8S_VERSION-$key"
WORK="$CACHE_ROOT/kind"
SAVED="$WORK/node-$K8S_VERSION-$key.tar"
log() { printf '[kind-node %5ss] %s\n' "$SECONDS" "$*" >&2; }
mkdir -p "$WORK"

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG"; exit 0; fi
if [ -f "$SAVED" ]; then
  log "docker load $(basename "$SAVED")"
  "$DOCKER" load -i "$SAVED" >/dev/null && { echo "$TAG"; exit 0; }
fi

# --- binaries ------------------------------------------------------------------------------------------------
log "Kubernetes $K8S_VERSION control plane + node binaries (hack/toolchain.sh)"
"$REPO/hack/toolchain.sh" all >/dev/null
"$REPO/hack/toolchain.sh" k8s-node >/dev/null
KBIN="$WORK/bin"; mkdir -p "$KBIN"
if [ ! -x "$KBIN/coredns-$COREDNS_VERSION" ]; then
  log "CoreDNS $COREDNS_VERSION (go install)"
  GOBIN="$KBIN/.gobin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$KBIN/.gobin/coredns" "$KBIN/coredns-$COREDNS_VERSION"
fi
if [ ! -x "$KBIN/pause" ]; then
  K8SMOD="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\([^"]*\)".*/\1/p')"
  log "pause (gcc -static $K8SMOD/build/pause/linux/pause.c)"
  gcc -Os -static -DVERSION=mergevq -o "$KBIN/pause" "$K8SMOD/build/pause/linux/pause.c" && strip "$KBIN/pause"
fi
KINDMOD="$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\([^"]*\)".*/\1/p')"
[ -d "$KINDMOD/images/base/files" ] || { echo "kind-node: $KINDMOD/images/base/files missing" >&2; exit 1; }

# --- images the node's containerd must hold (exact tags kubeadm/kind ask for) ---------------------------------
IPT="$("$REPO/hack/images/rootfs.sh" mergevq/iptables:bookworm --packages "ca-certificates iptables nftables conntrack iproute2 kmod")"
ETCD_TAG="$("$BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep /etcd: | sed 's/.*://')"
PAUSE_TAG="$("$BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep /pause: | sed 's/.*://')"
CORE_TAG="$("$BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep /coredns: | sed 's/.*://')"
[ -n "$ETCD_TAG" ] && [ -n "$PAUSE_TAG" ] && [ -n "$CORE_TAG" ] || { echo "kind-node: kubeadm config images list failed" >&2; exit 1; }
ctx="$(mktemp -d "$WORK/.ctx-XXXXXX")"; trap 'rm -rf "$ctx"' EXIT
static_image() { # tag binary-path name-in-image [entrypoint]
  local d="$ctx/img-$(echo "$1" | tr '/:' '__')"; mkdir -p "$d"; cp "$2" "$d/$3"
  { echo "FROM scratch"; echo "COPY $3 /usr/local/bin/$3"; echo 'ENV PATH=/usr/local/bin:/usr/bin:/bin'
    [ -n "${4:-}" ] && echo "ENTRYPOINT [\"/usr/local/bin/$3\"]"; } >"$d/Dockerfile"
  "$DOCKER" build -q -t "$1" "$d" >/dev/null
}
images=()
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  static_image "registry.k8s.io/$c:$K8S_VERSION" "$BIN/$c" "$c"; images+=("registry.k8s.io/$c:$K8S_VERSION")
done
d="$ctx/img-kube-proxy"; mkdir -p "$d"; cp "$BIN/kube-proxy" "$d/"
printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' "$IPT" >"$d/Dockerfile"
"$DOCKER" build -q -t "registry.k8s.io/kube-proxy:$K8S_VERSION" "$d" >/dev/null; images+=("registry.k8s.io/kube-proxy:$K8S_VERSION")
static_image "registry.k8s.io/etcd:$ETCD_TAG" "$BIN/etcd" etcd; images+=("registry.k8s.io/etcd:$ETCD_TAG")
static_image "registry.k8s.io/coredns/coredns:$CORE_TAG" "$KBIN/coredns-$COREDNS_VERSION" coredns entry
"$DOCKER" tag "registry.k8s.io/coredns/coredns:$CORE_TAG" "registry.k8s.io/coredns/coredns:$CORE_TAG" ; images+=("registry.k8s.io/coredns/coredns:$CORE_TAG")
d="$ctx/img-pause"; mkdir -p "$d"; cp "$KBIN/pause" "$d/"; printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$d/Dockerfile"
"$DOCKER" build -q -t "registry.k8s.io/pause:$PAUSE_TAG" "$d" >/dev/null
SANDBOX_TAG="$(sed -n 's/.*sandbox_image = "\(.*\)"/\1/p' "$KINDMOD/images/base/files/etc/containerd/config.toml")"
"$DOCKER" tag "registry.k8s.io/pause:$PAUSE_TAG" "$SANDBOX_TAG"
images+=("registry.k8s.io/pause:$PAUSE_TAG" "$SANDBOX_TAG")
log "saving ${#images[@]} component images"
"$DOCKER" save -o "$ctx/images.tar" "${images[@]}"

# --- node root filesystem ------------------------------------------------------------------------------------
ROOTFS="$("$REPO/hack/images/rootfs.sh" mergevq/kind-rootfs:bookworm --packages "systemd dbus conntrack iptables nftables
  iproute2 ethtool util-linux mount kmod libseccomp2 pigz fuse-overlayfs e2fsprogs bash ca-certificates curl jq procps
  containerd runc containernetworking-plugins socat")"
mkdir -p "$ctx/node/files" "$ctx/node/bin"
cp -r "$KINDMOD/images/base/files/." "$ctx/node/files/" && chmod -R u+w "$ctx/node/files"
# Our tree is only systemd's: kind's config.toml with the OOM-score quirk of some VMs (negative oom_score_adj
# cannot be set, so every pod sandbox would fail to start) handled up front.
sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$ctx/node/files/etc/containerd/config.toml"
cp "$BIN/kubeadm" "$BIN/kubelet" "$BIN/kubectl" "$ctx/node/bin/"
cat >"$ctx/node/Dockerfile" <<DOCKERFILE
FROM $ROOTFS
COPY files/ /
COPY bin/ /usr/bin/
RUN chmod 0755 /usr/local/bin/* /kind/bin/* \\
 && ln -sf /usr/bin/containerd /usr/local/bin/containerd \\
 && ln -sf /usr/bin/containerd-shim-runc-v2 /usr/local/bin/containerd-shim-runc-v2 \\
 && ln -sf /usr/bin/ctr /usr/local/bin/ctr \\
 && mkdir -p /opt/cni && rm -rf /opt/cni/bin && ln -s /usr/lib/cni /opt/cni/bin \\
 && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \\
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
 && ln -sf /usr/lib/systemd/systemd /sbin/init \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
 && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests /kind/manifests \\
 && ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
      | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json \\
 && echo "$K8S_VERSION" > /kind/version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
# kind reads the storage class from here (no provisioner: the project's runs use emptyDir and S3).
cat >"$ctx/node/files/kind/manifests-default-storage.yaml" <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
YAML
mkdir -p "$ctx/node/files/kind/manifests" && mv "$ctx/node/files/kind/manifests-default-storage.yaml" "$ctx/node/files/kind/manifests/default-storage.yaml"
log "docker build node filesystem"
"$DOCKER" build -q -t "$TAG-stage" "$ctx/node" >/dev/null

# --- import the images into the node's containerd (what kind's node-image builder does), then commit -------
runtime=(); "$DOCKER" info --format '{{json .Runtimes}}' | grep -q mergevq-runc && runtime=(--runtime=mergevq-runc)
cid="$("$DOCKER" run -d --privileged "${runtime[@]}" --entrypoint=sleep "$TAG-stage" infinity)"
trap '"$DOCKER" rm -f "$cid" >/dev/null 2>&1 || true; rm -rf "$ctx"' EXIT
"$DOCKER" exec "$cid" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
for _ in $(seq 1 60); do "$DOCKER" exec "$cid" ctr info >/dev/null 2>&1 && break; sleep 1; done
"$DOCKER" cp "$ctx/images.tar" "$cid:/images.tar"
log "ctr images import (pinned)"
"$DOCKER" exec "$cid" ctr -n k8s.io images import --label=io.cri-containerd.pinned=pinned --no-unpack --digests /images.tar >/dev/null
"$DOCKER" exec "$cid" bash -c 'rm /images.tar; pkill containerd; for i in $(seq 1 30); do pgrep containerd >/dev/null || exit 0; sleep 1; done'
n="$("$DOCKER" exec "$cid" bash -c 'ls /var/lib/containerd/io.containerd.content.v1.content/blobs/sha256 | wc -l')"
log "containerd content store: $n blobs"
"$DOCKER" commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'ENV container=docker' --change 'CMD []' "$cid" "$TAG" >/dev/null
"$DOCKER" rm -f "$cid" >/dev/null
"$DOCKER" rmi "$TAG-stage" >/dev/null 2>&1 || true
log "docker save → $SAVED"
rm -f "$WORK"/node-*.tar
"$DOCKER" save -o "$SAVED.part" "$TAG" && mv "$SAVED.part" "$SAVED"
log "$TAG: $(( $("$DOCKER" image inspect -f '{{.Size}}' "$TAG") / 1000000 )) MB"
echo "$TAG"
