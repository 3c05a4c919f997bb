#!/usr/bin/env bash
# Run every bench/*.bench.ts whose name contains $1 (all when empty). JSON lines on stdout, humans on stderr.
# Suites that need the cluster or S3 get one through hack/with-cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
filter="${1:-}"
shopt -s nullglob
ran=0
for f in bench/*.bench.ts; do
  name="$(basename "$f" .bench.ts)"
  [[ -z "$filter" || "$name" == *"$filter"* ]] || continue
  echo "== bench $name" >&2
  if grep -q "needs-cluster" "$f"; then hack/with-cluster.sh npx tsx "$f"; else npx tsx "$f"; fi
  ran=$((ran + 1))
done
# kind: image build times and sizes, node image, cluster create, image load and suite wall times of one
# `make kind-e2e` run (hosts with Docker, or root on Debian: the engine is installed and started).
if [[ "$filter" == kind* ]]; then
  echo "== bench kind (hack/kind-e2e.sh)" >&2
  out="$(mktemp)"
  BENCH_OUT="$out" hack/kind-e2e.sh >&2
  while IFS= read -r l; do
    printf '%s\n' "${l%\}}" | sed 's/$/,"backend":"kind","machine":"'"$(nproc)"' cores"}/'
  done <"$out"
  rm -f "$out"
  ran=$((ran + 1))
fi
[ "$ran" -gt 0 ] || { echo "bench: no suite matches '$filter'" >&2; exit 1; }
