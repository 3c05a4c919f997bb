#!/usr/bin/env bash
# The parts of `make setup` beyond npm and the Go toolchain. Each step is idempotent and cached outside the repo
# (~/.cache/mergevq); each prints its own progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
step() { printf '[setup %4ss] %s\n' "$((SECONDS - t0))" "$*" >&2; }

# Native tfjs backend from a registry-sourced libtensorflow (issue 8). Optional: without it the trainer runs on
# wasm, and every test passes on either backend (they say which one ran).
step "native tfjs backend (hack/tfjs-native/build.sh)"
if ! hack/tfjs-native/build.sh >/dev/null; then
  step "native tfjs backend unavailable: training and tests fall back to wasm"
fi
# The real-photo dataset (64² and 256² variants) from photographs shipped in Debian packages (issue 6).
step "real-photo dataset (hack/dataset/build.sh)"
hack/dataset/build.sh >/dev/null

# Python venv (numpy, onnx, scipy) + the generated random-weight FID Inception ONNX used by tests and the demo
# (issue 7). Real FID needs the real weights: see hack/inception/README.md.
step "evaluation venv + generated Inception ONNX (hack/inception/setup.sh)"
hack/inception/setup.sh >/dev/null

step "done"
