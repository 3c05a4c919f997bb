#!/usr/bin/env bash
# Creates the Python venv for the FID Inception tooling and generates the RANDOM-weight FID-InceptionV3
# ONNX model used by tests and benchmarks. Idempotent: re-running reuses the venv (reinstalling only
# when requirements.txt changed) and the model (regenerating only when the generator changed).
# Prints the model path as the last line of stdout; progress goes to stderr.
#
#   hack/inception/setup.sh            # → ~/.cache/mergevq/models/fid-inception-random-seed0.onnx
#   MERGEVQ_CACHE=/tmp/x hack/inception/setup.sh
#
# The model carries RANDOM weights (deterministic, seed 0). Metrics computed with it are labelled
# `[random-inception]` by trainer/src/eval; they are NOT FID/IS. See hack/inception/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MERGEVQ_CACHE:-$HOME/.cache/mergevq}"
venv="$cache/venv"
models="$cache/models"
python="${PYTHON:-python3}"
mkdir -p "$models"

req_hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.mergevq-req" 2>/dev/null)" != "$req_hash" ]]; then
  echo "setup.sh: creating venv $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$req_hash" >"$venv/.mergevq-req"
fi

model="$models/fid-inception-random-seed0.onnx"
gen_hash="$(cat "$here/fid_inception_onnx.py" "$here/make_random_inception.py" "$here/requirements.txt" | sha256sum | cut -c1-16)"
if [[ ! -s "$model" || "$(cat "$model.gen" 2>/dev/null)" != "$gen_hash" ]]; then
  echo "setup.sh: generating random-weight FID Inception → $model" >&2
  "$venv/bin/python" "$here/make_random_inception.py" --seed 0 --out "$model.tmp" >&2
  mv "$model.tmp" "$model"
  echo "$gen_hash" >"$model.gen"
fi
echo "$model"
