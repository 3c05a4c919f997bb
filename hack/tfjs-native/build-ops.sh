#!/usr/bin/env bash
# Builds the fused-op library hack/tfjs-native/ops/mergevq_ops.cc into a tfjs-node package dir built by
# build.sh (CPU variant), twice: <pkg>/deps/lib/mergevq_ops.node for AVX2/FMA and mergevq_ops_avx512.node for
# AVX-512 (F, DQ, VL, BW: Eigen's GEMM and exp run on 16-float vectors), compiled against the C++ headers of the
# same tensorflow wheel and linked to the libtensorflow beside it. Idempotent: each file is rebuilt only when
# the source, its compile flags or the library changed (hash in <file>.sha). trainer/src/backend/native.ts
# loads the AVX-512 file where the CPU has those extensions, the AVX2 one elsewhere.
#
#   hack/tfjs-native/build-ops.sh <tfjs-node package dir> <tensorflow wheel>
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PKG="$1" WHEEL="$2"
LIB="$PKG/deps/lib"
SRC="$HERE/ops/mergevq_ops.cc"
NODE_BIN="$(readlink -f "$(command -v node)")"
NODEDIR="${NODEDIR:-$(dirname "$(dirname "$NODE_BIN")")}"
# AVX2/FMA: Eigen's packet math picks its vector width at compile time; the module reports cpuSupported and
# the loader skips it on CPUs without them. No FMA contraction: MergevqAdam must round like the composed ops.
# The C++ ABI flag is the one the wheel was built with.
FLAGS=(-std=c++17 -O3 -mavx2 -mfma -ffp-contract=off -DEIGEN_FAST_MATH=0 -fPIC -shared -D_GLIBCXX_USE_CXX11_ABI=1 -DEIGEN_MAX_ALIGN_BYTES=64)
AVX512=(-mavx512f -mavx512dq -mavx512vl -mavx512bw)
log() { printf '[tfjs-native ops] %s\n' "$*" >&2; }

key_of() { cat "$SRC" <(printf '%s\n' "$@") "$LIB/libtensorflow_framework.so.2" | sha256sum | cut -c1-16; }
fresh() { [[ -f "$1" && "$(cat "$1.sha" 2>/dev/null)" == "$2" ]]; }
OUT="$LIB/mergevq_ops.node" OUT512="$LIB/mergevq_ops_avx512.node"
key="$(key_of "${FLAGS[@]}")" key512="$(key_of "${FLAGS[@]}" "${AVX512[@]}")"
if fresh "$OUT" "$key" && fresh "$OUT512" "$key512"; then
  log "present: $OUT, $OUT512"
  exit 0
fi
command -v g++ >/dev/null || { echo "build-ops: g++ is required" >&2; exit 1; }
# The wheel's full C++ headers (tensorflow/include: TF framework, Eigen, absl, protobuf) are extracted once
# next to the wheel; build.sh keeps only the C API headers in the package.
INC="${WHEEL%.whl}.include"
if [[ ! -f "$INC/.complete" ]]; then
  log "extracting C++ headers from $(basename "$WHEEL")"
  rm -rf "$INC"
  python3 - "$WHEEL" "$INC" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for m in z.infolist():
        if m.filename.startswith("tensorflow/include/") and not m.is_dir():
            z.extract(m, out)
PY
  touch "$INC/.complete"
fi
# build_one <out> <key> <flags...>
build_one() {
  local out="$1" k="$2"
  shift 2
  if fresh "$out" "$k"; then
    log "present: $out"
    return
  fi
  log "g++ $* $(basename "$SRC")"
  local tmp="$out.tmp.$$"
  g++ "$@" -I"$INC/tensorflow/include" -I"$NODEDIR/include/node" "$SRC" -o "$tmp" \
    -L"$LIB" -l:libtensorflow_framework.so.2 -l:libtensorflow_cc.so.2 -Wl,-rpath,'$ORIGIN'
  if ldd "$tmp" | grep -q "not found"; then ldd "$tmp" >&2; rm -f "$tmp"; echo "build-ops: unresolved libraries" >&2; exit 1; fi
  mv "$tmp" "$out"
  echo "$k" >"$out.sha"
  log "built $out"
}
build_one "$OUT" "$key" "${FLAGS[@]}"
build_one "$OUT512" "$key512" "${FLAGS[@]}" "${AVX512[@]}"
