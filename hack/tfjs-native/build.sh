#!/usr/bin/env bash
# Builds the @tensorflow/tfjs-node native addon against a libtensorflow taken from a package registry
# (PyPI's tensorflow-cpu wheel), because tfjs-node's own install step downloads libtensorflow from a host
# that our machines cannot reach (and npm 11 blocks install scripts anyway). The result lives in a cache
# folder OUTSIDE the repo, keyed by version:
#
#   ${MERGEVQ_CACHE:-~/.cache/mergevq}/tfjs-node/<tfjs-node version>/node_modules/@tensorflow/tfjs-node
#
# trainer/src/backend/select.ts finds it there by itself (or wherever MERGEVQ_TFJS_NODE_DIR points).
# Idempotent: a complete build (BUILD-INFO.json written last, after a load test) is reused.
# Prints the package dir on stdout (last line); progress on stderr.
#
#   hack/tfjs-native/build.sh            build when missing, print package dir
#   hack/tfjs-native/build.sh --pkg-dir  print package dir only (no build)
#   hack/tfjs-native/build.sh --check    exit 0 when a complete build for these versions is present
#   hack/tfjs-native/build.sh --force    rebuild even when present
#   hack/tfjs-native/build.sh --variant gpu [...]
#       @tensorflow/tfjs-node-gpu against the CUDA libtensorflow of PyPI's tensorflow wheel, plus the NVIDIA
#       runtime wheels that wheel names in its `and-cuda` extra (extracted to <dest>/nvidia/<wheel>/lib; the
#       trainer-gpu image puts them on LD_LIBRARY_PATH). Cached at .../tfjs-node/<version>-gpu/.
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

VARIANT=cpu
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT="$2"; shift 2 ;;
    --variant=*) VARIANT="${1#--variant=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
case "$VARIANT" in
  cpu) NPM_PKG=tfjs-node WHEEL_PKG=tensorflow-cpu SUFFIX="" ;;
  gpu) NPM_PKG=tfjs-node-gpu WHEEL_PKG=tensorflow SUFFIX="-gpu" ;;
  *) echo "tfjs-native: --variant must be cpu or gpu, got '$VARIANT'" >&2; exit 2 ;;
esac
WHEEL_FILE_PREFIX="${WHEEL_PKG//-/_}"

CACHE_ROOT="${MERGEVQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mergevq}"
BASE="$CACHE_ROOT/tfjs-node"
DEST="$BASE/$TFJS_NODE_VERSION$SUFFIX"
PKG="$DEST/node_modules/@tensorflow/$NPM_PKG"
INFO="$PKG/BUILD-INFO.json"
# Downloaded wheels are kept (the GPU set is ~2.5 GB): a rebuild or a second image build reuses them.
WHEELS="$CACHE_ROOT/wheels"

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
exec 9>"$BASE/.lock$SUFFIX"
flock 9 # one build at a time per cache (other clones/engineers share it)

# The fused-op library (CPU variant): built into the package dir, rebuilt when its source changes.
build_ops() {
  [ "$VARIANT" = cpu ] || return 0
  local whl
  whl="$(ls "$WHEELS"/"$WHEEL_FILE_PREFIX"-"$TF_VERSION"-*.whl 2>/dev/null | head -1)"
  if [ -z "$whl" ]; then
    pip_download "$WHEEL_PKG==$TF_VERSION"
    whl="$(ls "$WHEELS"/"$WHEEL_FILE_PREFIX"-"$TF_VERSION"-*.whl | head -1)"
  fi
  "$HERE/build-ops.sh" "$1" "$whl"
}

pip_download() { # requirement… → into $WHEELS (kept)
  mkdir -p "$WHEELS"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --python-version "$TF_WHEEL_PY" "$@" -d "$WHEELS" >&2
}

if [ "$force" = 0 ] && complete; then
  log "present: $NPM_PKG $TFJS_NODE_VERSION + libtensorflow $TF_VERSION ($WHEEL_PKG)"
  build_ops "$PKG"
  echo "$PKG"
  exit 0
fi

for t in node npm python3 make g++; do command -v "$t" >/dev/null || die "'$t' is required on PATH"; done
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is required (to fetch the tensorflow-cpu wheel from PyPI)"
NODE_BIN="$(readlink -f "$(command -v node)")"
NODEDIR="${NODEDIR:-$(dirname "$(dirname "$NODE_BIN")")}"
[ -f "$NODEDIR/include/node/node_api.h" ] && [ -f "$NODEDIR/include/node/common.gypi" ] \
  || die "node headers not found under $NODEDIR/include/node (set NODEDIR=<prefix of the node install>); node-gyp cannot download them here"
# node-gyp ships inside npm. The Node 24 of hack/node.sh carries no npm, so `npm root -g` (derived from the node
# first on PATH) can point at a prefix without one: also look beside the npm that is actually on PATH.
if [ -z "${NODE_GYP:-}" ]; then
  npm_cli="$(readlink -f "$(command -v npm)")" # …/node_modules/npm/bin/npm-cli.js
  for cand in "$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js" \
    "$(dirname "$(dirname "$npm_cli")")/node_modules/node-gyp/bin/node-gyp.js"; do
    [ -f "$cand" ] && { NODE_GYP="$cand"; break; }
  done
fi
[ -f "${NODE_GYP:-}" ] || die "node-gyp not found beside npm ($(npm root -g)/npm, ${npm_cli:-npm on PATH}; set NODE_GYP=path/to/node-gyp.js)"

STAGE="$(mktemp -d "$BASE/.stage-$TFJS_NODE_VERSION$SUFFIX.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# 1. libtensorflow from PyPI: the tensorflow-cpu (or CUDA tensorflow) wheel: headers + libtensorflow_cc.so.2 +
#    libtensorflow_framework.so.2.
log "pip download $WHEEL_PKG==$TF_VERSION ($([ "$VARIANT" = gpu ] && echo '~620' || echo '~230') MB, manylinux2014_x86_64)"
pip_download "$WHEEL_PKG==$TF_VERSION"
WHEEL="$(ls "$WHEELS"/"$WHEEL_FILE_PREFIX"-"$TF_VERSION"-*.whl | head -1)"

log "npm install --ignore-scripts @tensorflow/$NPM_PKG@$TFJS_NODE_VERSION"
mkdir -p "$STAGE/root"
printf '{"name":"mergevq-tfjs-node-cache","private":true}\n' >"$STAGE/root/package.json"
(cd "$STAGE/root" && npm install --silent --ignore-scripts --no-audit --no-fund --no-package-lock \
  "@tensorflow/$NPM_PKG@$TFJS_NODE_VERSION" >&2)
SPKG="$STAGE/root/node_modules/@tensorflow/$NPM_PKG"
# The repo's @tensorflow/tfjs answers tfjs-node's require("@tensorflow/tfjs"/"-core") at run time; a second
# copy here would re-register every cpu/webgl kernel and split the io registries, so it is removed.
for d in "$STAGE"/root/node_modules/@tensorflow/*; do
  [ "$(basename "$d")" = "$NPM_PKG" ] || rm -rf "$d"
done

# GPU: the NVIDIA runtime wheels the tensorflow wheel itself names (METADATA `Requires-Dist: … extra == "and-cuda"`),
# at exactly those versions; their shared libraries go to $DEST/nvidia/<name>/lib.
NVIDIA_LIBS=""
if [ "$VARIANT" = gpu ]; then
  mapfile -t reqs < <(python3 - "$WHEEL" <<'PY'
import sys, zipfile, re
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        m = re.match(r"Requires-Dist: (nvidia-[a-z0-9-]+) ?\(?(==[0-9.]+)\)? ?; .*extra == .and-cuda.", line)
        if m:
            print(m.group(1) + m.group(2))
PY
)
  [ ${#reqs[@]} -gt 0 ] || die "$(basename "$WHEEL") names no and-cuda NVIDIA wheels"
  log "pip download ${#reqs[@]} NVIDIA runtime wheels named by $(basename "$WHEEL"): ${reqs[*]}"
  pip_download "${reqs[@]}"
  mkdir -p "$STAGE/nvidia"
  for r in "${reqs[@]}"; do
    name="${r%%==*}" ver="${r#*==}"
    whl="$(ls "$WHEELS"/"${name//-/_}"-"$ver"-*.whl | head -1)"
    python3 - "$whl" "$STAGE/nvidia/$name" <<'PY'
import sys, zipfile, os, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for m in z.infolist():
        # nvidia/<component>/lib/*.so*: the runtime libraries (headers, static libs and binaries are left out)
        parts = m.filename.split("/")
        if len(parts) >= 4 and parts[0] == "nvidia" and parts[2] == "lib" and ".so" in parts[-1] and not m.is_dir():
            dst = os.path.join(out, "lib", parts[-1])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with z.open(m) as s, open(dst, "wb") as d:
                shutil.copyfileobj(s, d, 1 << 20)
PY
    [ -d "$STAGE/nvidia/$name/lib" ] && NVIDIA_LIBS="$NVIDIA_LIBS:$DEST/nvidia/$name/lib"
  done
  NVIDIA_LIBS="${NVIDIA_LIBS#:}"
  printf '%s\n' "${reqs[@]}" >"$STAGE/nvidia/REQUIREMENTS.txt"
fi

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
# The CUDA libraries are dlopen'ed by libtensorflow only when a GPU is used; loading needs none of them.
TF_RUNTIME="$(node -p "require('$BINDING').TF_Version")"
log "addon loads; $nsym TF_*/TFE_* imports all resolve; TF_Version() = $TF_RUNTIME"

build_ops "$SPKG"

cat >"$SPKG/BUILD-INFO.json" <<EOF
{
  "package": "@tensorflow/$NPM_PKG",
  "variant": "$VARIANT",
  "tfjsNode": "$TFJS_NODE_VERSION",
  "tensorflow": "$TF_VERSION",
  "tensorflowRuntime": "$TF_RUNTIME",
  "source": "pypi:$WHEEL_PKG==$TF_VERSION ($(basename "$WHEEL"))",
  "nvidiaLibraryPath": "$NVIDIA_LIBS",
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
[ -d "$STAGE/nvidia" ] && mv "$STAGE/nvidia" "$DEST/nvidia"
rm -rf "$DEST.old"
log "done in ${SECONDS}s: $PKG"
echo "$PKG"
