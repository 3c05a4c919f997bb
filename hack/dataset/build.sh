#!/usr/bin/env bash
# Builds the debphotos10 dataset (64² and 256² variants by default) into the cache, outside the repo.
# Makes sure the pinned Debian packages holding the source photos are available first:
#   - already installed (dpkg) → photos are read from /
#   - root with apt-get        → apt-get install the pinned versions
#   - otherwise                → apt-get download + dpkg-deb -x into the cache (no root needed)
# Arguments are passed to build.ts (e.g. --size 64 --verify). Prints one dataset dir per line on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
PKGS=("palapeli-data=4:22.12.3-1" "lomiri-wallpapers-16.04=20.04.0-2")
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
log() { printf '[dataset] %s\n' "$*" >&2; }

installed() { [ "$(dpkg-query -W -f='${Version}' "${1%%=*}" 2>/dev/null || true)" = "${1#*=}" ]; }

SOURCE_ROOT=/
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get install -y --no-install-recommends "${missing[@]}" >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
  else
    SOURCE_ROOT="$CACHE_ROOT/dataset-sources/root"
    mkdir -p "$CACHE_ROOT/dataset-sources/debs" "$SOURCE_ROOT"
    for p in "${missing[@]}"; do
      stamp="$SOURCE_ROOT/.${p%%=*}"
      [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${p#*=}" ] && continue
      log "downloading $p (no root: unpacking into $SOURCE_ROOT)"
      (cd "$CACHE_ROOT/dataset-sources/debs" && apt-get download "$p" >&2)
      dpkg-deb -x "$CACHE_ROOT/dataset-sources/debs/${p%%=*}_"*.deb "$SOURCE_ROOT"
      echo "${p#*=}" > "$stamp"
    done
    # Installed packages (if any) are still read from / — mixing roots is not supported, so unpack all.
    for p in "${PKGS[@]}"; do
      if installed "$p" && [ ! -f "$SOURCE_ROOT/.${p%%=*}" ]; then
        (cd "$CACHE_ROOT/dataset-sources/debs" && apt-get download "$p" >&2)
        dpkg-deb -x "$CACHE_ROOT/dataset-sources/debs/${p%%=*}_"*.deb "$SOURCE_ROOT"
        echo "${p#*=}" > "$SOURCE_ROOT/.${p%%=*}"
      fi
    done
  fi
fi
exec npx --no-install tsx hack/dataset/build.ts --source-root "$SOURCE_ROOT" "$@"
