#!/usr/bin/env bash
# Stop everything hack/cluster-up.sh started and remove its state dir. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node --no-warnings --import tsx test/cluster/down.ts "$@"
