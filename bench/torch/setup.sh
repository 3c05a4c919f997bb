#!/usr/bin/env bash
# Creates (once) the Python environment of the PyTorch twin, ~/.cache/mergevq/venv-torch, from PyPI, and
# prints its python. Reinstalls only when requirements.txt changes. Used by bench/torch.bench.ts only:
# `make test` never installs torch. MERGEVQ_CACHE moves the cache; PYTHON picks the base interpreter.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MERGEVQ_CACHE:-$HOME/.cache/mergevq}/venv-torch"
req_hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.mergevq-req" 2>/dev/null)" != "$req_hash" ]]; then
  echo "bench/torch/setup.sh: installing $(grep -v '^#' "$here/requirements.txt" | tr '\n' ' ')into $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$req_hash" >"$venv/.mergevq-req"
fi
echo "$venv/bin/python"
