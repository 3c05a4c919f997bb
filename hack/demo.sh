#!/usr/bin/env bash
# `make demo` (after `make setup`): see hack/demo/main.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node --no-warnings --import tsx hack/demo/main.ts "$@"
