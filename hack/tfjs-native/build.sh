#!/usr/bin/env bash
# Builds the @tensorflow/tfjs-node native addon against a libtensorflow taken from a package registry
# (PyPI's tensorflow-cpu wheel), because tfjs-node's own install step downloads libtensorflow from a host
# that our machines cannot reach (and npm 11 blocks install scripts anyway). The result lives in a cache
# folder OUTSIDE the repo, keyed by version:
#
#   ${MERGEVQ_CACHE:-~/.cache/mergevq}/tfjs-node/<tfjs-node version>/node_modules/@tensorflow/tfjs-node
#
# trainer/src/backend.ts finds it there by itself (or wherever MERGEVQ_TFJS_NODE_DIR points).
# Idempotent: a complete build (BUILD-INFO.json written last, after a load test) is reused.
# Prints the package dir on stdout (last line); progress on stderr.
#
#   hack/tfjs-native/build.sh            build when missing, print package dir
#   hack/tfjs-native/build.sh --pkg-dir  print package dir only (no build)
#   hack/tfjs-native/build.sh --check    exit 0 when a complete build for these versions is present
#   hack/tfjs-native/build.sh --force    rebuild even when present
#
# Why the wheel, and why it is ABI-safe: see hack/tfjs-native/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# tfjs-node must match the repo's @tensorflow/tfjs exactly: at run time its require("@tensorflow/tfjs")
# is answered by the repo's copy (see backend.ts), so the kernels register with the one tfjs engine.
TFJS_NODE_VERSION="${TFJS_NODE_VERSION:-$(node -p "require('$REPO/node_modules/@tensorflow/tfjs/package.json').version" 2>/dev/null || echo 4.22.0)}"
# libtensorflow: tensorflow-cpu wheel from PyPI. 2.18.0 is the same build TF Java 1.1.0 ships on Maven Central
# (org.tensorflow:tensorflow-core-native:1.1.0:linux-x86_64; byte-identical libtensorflow_cc.so.2).
TF_VERSION="${TF_VERSION:-2.18.0}"
TF_WHEEL_PY="${TF_WHEEL_PY:-3.11}" # any supported CPython tag: the C/C++ libs in the wheel do not link libpython
NAPI_VERSION=8                    # highest napi version tfjs-node 4.22 lists in package.json "binary"

CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
BASE="$CACHE_ROOT/tfjs-node"
DEST="$BASE/$TFJS_NODE_VERSION"
PKG="$DEST/node_modules/@tensorflow/tfjs-node"
INFO="$PKG/BUILD-INFO.json"

log() { printf '[tfjs-native %5ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'tfjs-native: %s\n' "$*" >&2; exit 1; }

complete() {
  [ -f "$INFO" ] && [ -f "$PKG/lib/napi-v$NAPI_VERSION/tfjs_binding.node" ] \
    && grep -q "\"tensorflow\": \"$TF_VERSION\"" "$INFO" && grep -q "\"tfjsNode\": \"$TFJS_NODE_VERSION\"" "$INFO"
}

force=0
case "${1:-}" in
  --pkg-dir) echo "$PKG"; exit 0 ;;
  --check) complete; exit $? ;;
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--pkg-dir|--check|--force]" >&2; exit 2 ;;
esac

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || die "only linux x86_64 is supported (wheel platform manylinux2014_x86_64)"
mkdir -p "$BASE"
exec 9>"$BASE/.lock"
flock 9 # one build at a time per cache (other clones/engineers share it)

if [ "$force" = 0 ] && complete; then
  log "present: tfjs-node $TFJS_NODE_VERSION + libtensorflow $TF_VERSION"
  echo "$PKG"
  exit 0
fi

for t in node npm python3 make g++; do command -v "$t" >/dev/null || die "'$t' is required on PATH"; done
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is required (to fetch the tensorflow-cpu wheel from PyPI)"
NODE_BIN="$(readlink -f "$(command -v node)")"
NODEDIR="${NODEDIR:-$(dirname "$(dirname "$NODE_BIN")")}"
[ -f "$NODEDIR/include/node/node_api.h" ] && [ -f "$NODEDIR/include/node/common.gypi" ] \
  || die "node headers not found under $NODEDIR/include/node (set NODEDIR=<prefix of the node install>); node-gyp cannot download them here"
NODE_GYP="${NODE_GYP:-$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js}"
[ -f "$NODE_GYP" ] || die "node-gyp not found at $NODE_GYP (set NODE_GYP=path/to/node-gyp.js)"

STAGE="$(mktemp -d "$BASE/.stage-$TFJS_NODE_VERSION.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# 1. libtensorflow from PyPI: tensorflow-cpu wheel (headers + libtensorflow_cc.so.2 + libtensorflow_framework.so.2).
log "pip download tensorflow-cpu==$TF_VERSION (~230 MB, manylinux2014_x86_64)"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 --python-version "$TF_WHEEL_PY" "tensorflow-cpu==$TF_VERSION" -d "$STAGE/wheel" >&2
WHEEL="$(ls "$STAGE"/wheel/tensorflow_cpu-"$TF_VERSION"-*.whl)"

log "npm install --ignore-scripts @tensorflow/tfjs-node@$TFJS_NODE_VERSION"
mkdir -p "$STAGE/root"
printf '{"name":"mergevq-tfjs-node-cache","private":true}\n' >"$STAGE/root/package.json"
(cd "$STAGE/root" && npm install --silent --ignore-scripts --no-audit --no-fund --no-package-lock \
  "@tensorflow/tfjs-node@$TFJS_NODE_VERSION" >&2)
SPKG="$STAGE/root/node_modules/@tensorflow/tfjs-node"
# The repo's @tensorflow/tfjs answers tfjs-node's require("@tensorflow/tfjs"/"-core") at run time; a second
# copy here would re-register every cpu/webgl kernel and split the io registries, so it is removed.
for d in "$STAGE"/root/node_modules/@tensorflow/*; do
  [ "$(basename "$d")" = tfjs-node ] || rm -rf "$d"
done

log "extracting libtensorflow + C API headers from $(basename "$WHEEL")"
python3 - "$WHEEL" "$SPKG/deps" <<'PY'
import sys, zipfile, os, shutil
wheel, deps = sys.argv[1], sys.argv[2]
libs = {"tensorflow/libtensorflow_cc.so.2", "tensorflow/libtensorflow_framework.so.2"}
inc_prefixes = ("tensorflow/include/tensorflow/c/", "tensorflow/include/tensorflow/core/platform/ctstring",
                "tensorflow/include/tsl/platform/ctstring", "tensorflow/include/xla/tsl/c/", "tensorflow/include/tsl/c/")
n = 0
with zipfile.ZipFile(wheel) as z:
    for m in z.infolist():
        if m.is_dir():
            continue
        if m.filename in libs:
            out = os.path.join(deps, "lib", os.path.basename(m.filename))
        elif m.filename.startswith(inc_prefixes) and m.filename.endswith(".h"):
            out = os.path.join(deps, "include", m.filename[len("tensorflow/include/"):])
        elif m.filename.startswith("tensorflow-") and m.filename.endswith(".dist-info/LICENSE"):
            out = os.path.join(deps, "LICENSE")
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(m) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        n += 1
missing = [l for l in libs if not os.path.exists(os.path.join(deps, "lib", os.path.basename(l)))]
if missing:
    sys.exit(f"wheel lacks {missing}")
print(f"extracted {n} files", file=sys.stderr)
PY
rm -rf "$STAGE/wheel"
# binding.gyp links -ltensorflow -ltensorflow_framework with rpath $ORIGIN/../../deps/lib. libtensorflow.so points
# at libtensorflow_cc.so.2, which carries the whole C + eager C API (TF_*, TFE_*); its SONAME is what the addon
# records as NEEDED, so the symlinks only matter at link time.
ln -s libtensorflow_cc.so.2 "$SPKG/deps/lib/libtensorflow.so"
ln -s libtensorflow_framework.so.2 "$SPKG/deps/lib/libtensorflow_framework.so"

log "node-gyp rebuild (N-API v$NAPI_VERSION, headers from $NODEDIR/include/node)"
(cd "$SPKG" && node "$NODE_GYP" rebuild --silent --jobs=max --nodedir="$NODEDIR" \
  --module_name=tfjs_binding --module_path="$SPKG/lib/napi-v$NAPI_VERSION" --napi_build_version="$NAPI_VERSION" >&2)
rm -rf "$SPKG/build/Release/obj.target" "$SPKG/build/Release/.deps"
BINDING="$SPKG/lib/napi-v$NAPI_VERSION/tfjs_binding.node"
[ -f "$BINDING" ] || die "node-gyp finished but $BINDING is missing"

# Every TF symbol the addon imports must resolve in the shipped libraries.
if ldd "$BINDING" | grep -q "not found"; then ldd "$BINDING" >&2; die "unresolved shared libraries"; fi
undefined="$(nm -D --undefined-only "$BINDING" | awk '{print $2}' | sed 's/@.*//' | grep -E '^TFE?_' | sort -u)"
exported="$(nm -D --defined-only "$SPKG/deps/lib/libtensorflow_cc.so.2" "$SPKG/deps/lib/libtensorflow_framework.so.2" \
  | awk 'NF==3{print $3}' | sed 's/@.*//' | sort -u)"
unresolved="$(comm -23 <(echo "$undefined") <(echo "$exported"))"
[ -z "$unresolved" ] || die "addon imports TF symbols the libraries do not export: $unresolved"
nsym="$(echo "$undefined" | wc -l)"
TF_RUNTIME="$(node -p "require('$BINDING').TF_Version")"
log "addon loads; $nsym TF_*/TFE_* imports all resolve; TF_Version() = $TF_RUNTIME"

cat >"$SPKG/BUILD-INFO.json" <<EOF
{
  "tfjsNode": "$TFJS_NODE_VERSION",
  "tensorflow": "$TF_VERSION",
  "tensorflowRuntime": "$TF_RUNTIME",
  "source": "pypi:tensorflow-cpu==$TF_VERSION ($(basename "$WHEEL"))",
  "napi": $NAPI_VERSION,
  "node": "$(node --version)",
  "tfImports": $nsym,
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "buildSeconds": $SECONDS
}
EOF

rm -rf "$DEST.old"
[ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv "$STAGE/root" "$DEST"
rm -rf "$DEST.old"
log "done in ${SECONDS}s: $PKG"
echo "$PKG"
