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
[ "$ran" -gt 0 ] || { echo "bench: no suite matches '$filter'" >&2; exit 1; }
