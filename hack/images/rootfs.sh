#!/usr/bin/env bash
# Build a Debian bookworm root filesystem with debootstrap and `docker import` it as an image, because no
# container registry can be reached here (and often not from a user's air-gapped build host either). Cached
# under ${MERGEVQ_CACHE:-~/.cache/mergevq}/rootfs/, keyed by suite + variant + package list: the debootstrap
# runs once, later calls only re-import when the image is missing from the engine.
#
#   hack/images/rootfs.sh TAG [--packages "a b c"] [--variant minbase] [--tar-only]
#
# Prints the tarball path (--tar-only) or TAG on stdout; progress on stderr.
set -euo pipefail
TAG="${1:?usage: $0 TAG [--packages LIST] [--variant V] [--tar-only]}"; shift
PACKAGES="" VARIANT=minbase TAR_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --packages) PACKAGES="$2"; shift 2 ;;
    --variant) VARIANT="$2"; shift 2 ;;
    --tar-only) TAR_ONLY=1; shift ;;
    *) echo "rootfs: unknown argument $1" >&2; exit 2 ;;
  esac
done
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKER="${DOCKER:-/usr/bin/docker}"
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
key="$(printf '%s\n' "$SUITE" "$VARIANT" $(printf '%s\n' $PACKAGES | sort -u) | sha256sum | cut -c1-16)"
OUT="$CACHE_ROOT/rootfs/$SUITE-$VARIANT-$key.tar"
log() { printf '[rootfs %5ss] %s\n' "$SECONDS" "$*" >&2; }

if [ ! -f "$OUT" ]; then
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
  mkdir -p "$(dirname "$OUT")"
  dir="$(mktemp -d "$CACHE_ROOT/rootfs/.build-XXXXXX")"
  trap 'rm -rf "$dir"' EXIT
  include=""; [ -n "$PACKAGES" ] && include="--include=$(printf '%s\n' $PACKAGES | sort -u | paste -sd,)"
  log "debootstrap --variant=$VARIANT $SUITE ${include:+($(echo "$PACKAGES" | wc -w) extra packages)}"
  debootstrap --variant="$VARIANT" $include "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 || { tail -30 "$dir.log" >&2; exit 1; }
  rm -f "$dir.log"
  # Same apt sources in the image as the build used; no caches, docs or locales (they only add size).
  chroot "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/log/* "$dir"/usr/share/doc/* \
    "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/tmp/* "$dir"/var/tmp/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
  : >"$dir/etc/machine-id"
  tar --numeric-owner --xattrs -C "$dir" -cf "$OUT.part" .
  mv "$OUT.part" "$OUT"
  log "rootfs $(du -h "$OUT" | cut -f1) → $OUT"
fi
if [ "$TAR_ONLY" = 1 ]; then echo "$OUT"; exit 0; fi
want="$(basename "$OUT" .tar)"
if [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "mergevq.rootfs"}}' "$TAG" 2>/dev/null || true)" != "$want" ]; then
  log "docker import $TAG"
  "$DOCKER" import --change "LABEL mergevq.rootfs=$want" --change 'CMD ["/bin/bash"]' "$OUT" "$TAG" >/dev/null
fi
echo "$TAG"
